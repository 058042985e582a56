"""tools/dataset_converters/align_faces.py: photos to aligned data sets."""
import contextlib
import io
import json
import os
import os.path as osp
import sys
import tempfile
import unittest

import cv2
import numpy as np
import skimage.data

from oaml_mm.apis import photo_folder
from oaml_mm.datasets import FaceImageFolder
from oaml_mm.datasets.recordio import IndexedRecordReader, unpack_record

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'dataset_converters'))
import align_faces  # noqa: E402


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = align_faces.main(argv + ['--no-progress'])
    return code, out.getvalue(), err.getvalue()


class TestAlignFaces(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        d = cls.tmp.name
        cls.src = osp.join(d, 'raw')
        cls.masks = osp.join(d, 'masks')
        astro = skimage.data.astronaut()[:, :, ::-1]
        lower = np.full(astro.shape[:2], 255, np.uint8)
        lower[120:] = 0  # the nose tip (y 129) and below are covered
        photos = {
            'alice/a1.jpg': astro,
            'alice/a2.png': cv2.resize(astro[:, ::-1], (300, 300)),
            'bob/b1.png': cv2.cvtColor(astro, cv2.COLOR_BGR2GRAY),
            'bob/coffee.jpg': skimage.data.coffee()[:, :, ::-1]}
        for rel, img in photos.items():
            os.makedirs(osp.dirname(osp.join(cls.src, rel)), exist_ok=True)
            cv2.imwrite(osp.join(cls.src, rel), img)
            mask = lower if img.shape[:2] == astro.shape[:2] else \
                cv2.resize(lower, img.shape[1::-1], interpolation=cv2.INTER_NEAREST)
            os.makedirs(osp.join(cls.masks, osp.dirname(rel)), exist_ok=True)
            cv2.imwrite(osp.join(cls.masks, osp.splitext(rel)[0] + '.png'), mask)
        open(osp.join(cls.src, 'bob', 'empty.jpg'), 'wb').close()
        with open(osp.join(cls.src, 'bob', 'text.png'), 'w') as f:
            f.write('not an image')

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def _out(self, name):
        return osp.join(self.tmp.name, name)

    def test_folder_with_failures_and_resume(self):
        out = self._out('folder')
        code, text, err = _run([self.src, out, '--workers', '0'])
        self.assertEqual(code, 0, err)
        self.assertIn('3/6 photos aligned', text)
        rep = json.load(open(osp.join(out, 'align_report.json')))
        self.assertEqual((rep['photos'], rep['aligned'], rep['failed']), (6, 3, 3))
        self.assertEqual(rep['paths'], {'detected-5pt': 3})
        self.assertGreater(rep['mean_score'], 0.99)
        failures = {f['src']: f['reason'] for f in rep['failures']}
        self.assertEqual(set(failures), {'bob/coffee.jpg', 'bob/empty.jpg',
                                         'bob/text.png'})
        for rel, reason in failures.items():
            self.assertIn(osp.join(self.src, rel), reason)  # names the file
        self.assertIn('no face found', failures['bob/coffee.jpg'])
        ds = FaceImageFolder(data_root=out)
        self.assertEqual(len(ds), 3)
        self.assertEqual(sorted(ds.get_data_info(i)['gt_label']
                                for i in range(3)), [0, 0, 1])
        img = cv2.imread(osp.join(out, 'alice', 'a1.jpg'))
        self.assertEqual(img.shape, (112, 112, 3))
        # Crash after two photos: the journal's tail is cut mid-line and one
        # output is gone. The rerun redoes exactly what the journal lacks.
        journal = osp.join(out, '.align_journal.jsonl')
        lines = open(journal).read().splitlines()
        with open(journal, 'w') as f:
            f.write('\n'.join(lines[:2]) + '\n' + lines[2][:17])
        redo = [json.loads(ln)['src'] for ln in lines[2:]]
        for rel in redo:
            stem = osp.splitext(rel)[0] + '.jpg'
            if osp.isfile(osp.join(out, stem)):
                os.remove(osp.join(out, stem))
        code, text, err = _run([self.src, out, '--workers', '0'])
        self.assertEqual(code, 0, err)
        after = open(journal).read().splitlines()
        self.assertEqual(sorted(json.loads(ln)['src'] for ln in after[3:]),
                         sorted(redo))
        self.assertEqual(len(FaceImageFolder(data_root=out)), 3)
        self.assertEqual(json.load(open(osp.join(out, 'align_report.json')))
                         ['aligned'], 3)

    def test_rec_with_worker_processes(self):
        out = self._out('rec')
        code, text, err = _run([self.src, out, '--format', 'rec', '--workers',
                                '1'])
        self.assertEqual(code, 0, err)
        self.assertEqual(open(osp.join(out, 'property')).read(), '2,112,112')
        reader = IndexedRecordReader(osp.join(out, 'train.rec'))
        labels = []
        for key in (1, 2, 3):
            header, payload = unpack_record(reader.read(key))
            labels.append(float(np.asarray(header.label).reshape(-1)[0]))
            img = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
            self.assertEqual(img.shape, (112, 112, 3))
        self.assertEqual(labels, [0.0, 0.0, 1.0])
        reader.close()

    def test_masks_warped_with_the_image(self):
        out = self._out('occluded')
        code, text, err = _run([self.src, out, '--masks', self.masks,
                                '--workers', '0', '--align', 'eyes'])
        self.assertEqual(code, 0, err)
        labels = open(osp.join(out, 'labels.txt')).read().split('\n')
        self.assertEqual(labels[:3], ['alice/a1 0', 'alice/a2 0', 'bob/b1 1'])
        for name in ('alice/a1', 'alice/a2', 'bob/b1'):
            mask = cv2.imread(osp.join(out, 'masks', name + '.png'),
                              cv2.IMREAD_GRAYSCALE)
            self.assertEqual(mask.shape, (112, 112))
            # Template rows: eyes at y 51.6 visible, mouth at y 92.3 covered.
            self.assertTrue((mask[45:58, 30:82] == 255).all(), name)
            self.assertTrue((mask[86:100, 30:82] == 0).all(), name)
        rep = json.load(open(osp.join(out, 'align_report.json')))
        self.assertEqual(rep['paths'], {'detected-eyes': 3})

    def test_16bit_and_01_masks(self):
        # A 16-bit 0/1 mask was read with IMREAD_GRAYSCALE (shifted to all
        # zeros: the whole face occluded); a 0/1 mask was scaled by 1/255.
        src, masks = self._out('m16_in'), self._out('m16_masks')
        astro = skimage.data.astronaut()[:, :, ::-1]
        vis = np.ones(astro.shape[:2], bool)
        vis[120:] = False
        os.makedirs(osp.join(src, 'p'))
        os.makedirs(osp.join(masks, 'p'))
        for name, m in (('u16', vis.astype(np.uint16)), ('u8', vis.astype(np.uint8)),
                        ('full16', vis.astype(np.uint16) * 65535)):
            cv2.imwrite(osp.join(src, 'p', name + '.jpg'), astro)
            cv2.imwrite(osp.join(masks, 'p', name + '.png'), m)
        out = self._out('m16_out')
        code, text, err = _run([src, out, '--masks', masks, '--workers', '0',
                                '--align', 'eyes'])
        self.assertEqual(code, 0, err)
        self.assertIn('3/3 photos aligned', text)
        for name in ('u16', 'u8', 'full16'):
            mask = cv2.imread(osp.join(out, 'masks', 'p', name + '.png'),
                              cv2.IMREAD_UNCHANGED)
            self.assertEqual((mask.dtype, mask.shape), (np.uint8, (112, 112)))
            self.assertTrue((mask[45:58, 30:82] == 255).all(), name)
            self.assertTrue((mask[86:100, 30:82] == 0).all(), name)

    def test_flat_input_and_bad_options(self):
        flat = self._out('flat_in')
        os.makedirs(flat)
        cv2.imwrite(osp.join(flat, 'one.jpg'),
                    skimage.data.astronaut()[:, :, ::-1])
        code, text, err = _run([flat, self._out('flat_out'), '--workers', '0'])
        self.assertEqual(code, 0, err)
        self.assertTrue(osp.isfile(osp.join(self._out('flat_out'), 'one.jpg')))
        code, _, err = _run([flat, self._out('flat_rec'), '--format', 'rec'])
        self.assertEqual(code, 2)
        self.assertIn('needs one sub-folder per identity', err)
        code, _, err = _run([self._out('missing'), self._out('x')])
        self.assertEqual(code, 2)
        self.assertIn('not a folder of photos', err)

    def test_rerun_retries_failures_and_checks_options(self):
        # A rerun once kept every earlier failure ("3/6 photos aligned" again)
        # and silently ignored new options.
        src, out = self._out('rr_in'), self._out('rr_out')
        astro = skimage.data.astronaut()[:, :, ::-1]
        os.makedirs(osp.join(src, 'p'))
        cv2.imwrite(osp.join(src, 'p', 'ok.jpg'), astro)
        cv2.imwrite(osp.join(src, 'p', 'coffee.jpg'),
                    skimage.data.coffee()[:, :, ::-1])
        with open(osp.join(src, 'p', 'broken.png'), 'w') as f:
            f.write('not an image')
        code, text, err = _run([src, out, '--workers', '0'])
        self.assertEqual(code, 0, err)
        self.assertIn('1/3 photos aligned', text)
        self.assertNotIn('retried', text)
        ok_mtime = os.stat(osp.join(out, 'p', 'ok.jpg')).st_mtime_ns
        # Options that change aligned faces: refused, naming the option.
        code, _, err = _run([src, out, '--workers', '0', '--align', 'eyes'])
        self.assertEqual(code, 2)
        self.assertIn("--align 'auto' -> 'eyes'", err)
        self.assertEqual(len(err.strip().splitlines()), 1)
        # The user fixes the broken photo and gives a box for the coffee one.
        cv2.imwrite(osp.join(src, 'p', 'broken.png'), astro)
        boxes = self._out('rr_boxes.txt')
        with open(boxes, 'w') as f:
            f.write('p/coffee.jpg 150 50 350 300\n')
        code, text, err = _run([src, out, '--workers', '0', '--boxes', boxes])
        self.assertEqual(code, 0, err)
        self.assertIn('retried 2 earlier failure(s)', text)
        rep = json.load(open(osp.join(out, 'align_report.json')))
        self.assertEqual(rep['rerun']['retried'], 2)
        self.assertTrue(osp.isfile(osp.join(out, 'p', 'broken.jpg')))
        self.assertEqual(rep['rerun'], dict(retried=2, retried_ok=2,
                                            changed=0, missing=0))
        self.assertEqual((rep['aligned'], rep['failures']), (3, []))
        self.assertIn('2 now aligned, 0 still failing', text)
        self.assertEqual(rep['per_photo']['p/coffee.jpg'][0]['path'], 'given-box')
        # The aligned photo was kept, not redone.
        self.assertEqual(os.stat(osp.join(out, 'p', 'ok.jpg')).st_mtime_ns,
                         ok_mtime)
        # A replaced photo is redone; its failed-now output does not linger.
        cv2.imwrite(osp.join(src, 'p', 'ok.jpg'), skimage.data.coffee()[:, :, ::-1])
        code, text, err = _run([src, out, '--workers', '0', '--boxes', boxes])
        self.assertEqual(code, 0, err)
        self.assertIn('redid 1 aligned photo(s)', text)
        self.assertIn('2/3 photos aligned', text)
        self.assertFalse(osp.exists(osp.join(out, 'p', 'ok.jpg')))

    def test_rerun_redoes_a_deleted_output(self):
        # The journal once decided alone: a deleted aligned face was never
        # redone and still counted as aligned.
        src, out = self._out('del_in'), self._out('del_out')
        astro = skimage.data.astronaut()[:, :, ::-1]
        os.makedirs(osp.join(src, 'p'))
        for name in ('a.jpg', 'b.jpg'):
            cv2.imwrite(osp.join(src, 'p', name), astro)
        code, text, err = _run([src, out, '--workers', '0'])
        self.assertEqual(code, 0, err)
        kept = os.stat(osp.join(out, 'p', 'b.jpg')).st_mtime_ns
        os.remove(osp.join(out, 'p', 'a.jpg'))
        code, text, err = _run([src, out, '--workers', '0'])
        self.assertEqual(code, 0, err)
        self.assertIn('and 1 whose output file was gone', text)
        self.assertIn('2/2 photos aligned', text)
        self.assertTrue(osp.isfile(osp.join(out, 'p', 'a.jpg')))
        self.assertEqual(os.stat(osp.join(out, 'p', 'b.jpg')).st_mtime_ns, kept)
        rep = json.load(open(osp.join(out, 'align_report.json')))
        self.assertEqual(rep['rerun']['missing'], 1)
        self.assertEqual(len(FaceImageFolder(data_root=out)), 2)

    def test_layout_mistake_in_landmark_file_named(self):
        # x1..x5 y1..y5 and left/right-swapped lines once aligned a garbage
        # crop counted as a face.
        src, out = self._out('lmk_in'), self._out('lmk_out')
        os.makedirs(osp.join(src, 'p'))
        astro = skimage.data.astronaut()[:, :, ::-1]
        pts = np.array([[205, 102], [247, 104], [225, 129], [202, 139],
                        [245, 142]], np.float64)
        rows = {'good.jpg': pts.reshape(-1),
                'xy.jpg': np.concatenate([pts[:, 0], pts[:, 1]]),
                'swap.jpg': pts[[1, 0, 2, 4, 3]].reshape(-1)}
        lmk = self._out('lmk.txt')
        with open(lmk, 'w') as f:
            for name, row in rows.items():
                cv2.imwrite(osp.join(src, 'p', name), astro)
                f.write(f'p/{name} ' + ' '.join(f'{v:g}' for v in row) + '\n')
        code, text, err = _run([src, out, '--workers', '0', '--landmarks', lmk])
        self.assertEqual(code, 0, err)
        self.assertIn('1/3 photos aligned', text)
        rep = json.load(open(osp.join(out, 'align_report.json')))
        why = {f['src']: f['reason'] for f in rep['failures']}
        self.assertIn('read as all x then all y', why['p/xy.jpg'])
        self.assertIn('read as left and right swapped', why['p/swap.jpg'])
        self.assertEqual(rep['per_photo']['p/good.jpg'][0]['path'],
                         'given-landmarks')

    def test_tables_with_byte_order_mark(self):
        # The mark once became part of the first path: its line was ignored.
        path = self._out('bom_boxes.txt')
        with open(path, 'w', encoding='utf-8-sig') as f:
            f.write('p/a.jpg 1 2 3 4\n')
        self.assertEqual(photo_folder._read_table(path, 4, 'box'),
                         {'p/a.jpg': [1.0, 2.0, 3.0, 4.0]})

    def test_out_dir_inside_in_dir_refused(self):
        # OUT inside IN once took its own output as photos on a rerun (an
        # identity named "out" in the .rec).
        src = self._out('nest_in')
        os.makedirs(osp.join(src, 'p'))
        cv2.imwrite(osp.join(src, 'p', 'a.jpg'),
                    skimage.data.astronaut()[:, :, ::-1])
        for i, o in ((src, osp.join(src, 'out')), (src, src),
                     (osp.join(src, 'p'), src)):
            code, _, err = _run([i, o, '--workers', '0'])
            self.assertEqual(code, 2, (i, o))
            self.assertRegex(err, 'is inside (IN|OUT)_DIR')
            self.assertEqual(len(err.strip().splitlines()), 1)
        self.assertFalse(osp.exists(osp.join(src, 'out')))


if __name__ == '__main__':
    unittest.main()
