"""tools/infer.py compare / enrol / search, run in-process as a user runs them."""
import contextlib
import io
import json
import os.path as osp
import sys
import tempfile
import threading
import unittest
from unittest import mock

import cv2
import numpy as np

from tests.test_apis.helpers import write_checkpoint, write_config, write_face

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools'))
import infer  # noqa: E402


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = infer.main(argv)
    return code, out.getvalue(), err.getvalue()


class TestInferTool(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        d = cls.tmp.name
        cls.model = ['--config', write_config(osp.join(d, 'tiny.py')),
                     '--checkpoint', osp.join(d, 'tiny.pth')]
        write_checkpoint(osp.join(d, 'tiny.pth'))
        cls.imgs = [write_face(d, f'f{i}.png', i) for i in range(4)]

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_compare_prints_scores_decision_and_picture(self):
        show = osp.join(self.tmp.name, 'out', 'pair.png')
        code, out, err = _run(['compare', self.imgs[0], self.imgs[0], '--show',
                               show] + self.model)
        self.assertEqual(code, 0, err)
        self.assertRegex(out, r'adaface 1\.0000  qaconv -?\d+\.\d+  fused')
        self.assertRegex(out, r'(SAME|DIFFERENT) person \(fused .* threshold '
                         r'1\.5000, fused z-score; threshold calibrated at '
                         r'FAR=0\.001 on test\)')
        pic = cv2.imread(show)
        self.assertEqual(pic.shape[1], 2 * 336 + 90 + 40)
        code, out, _ = _run(['compare', self.imgs[0], self.imgs[1], '--json',
                             '--branch', 'adaface', '--threshold', '-1'] +
                            self.model)
        res = json.loads(out)
        self.assertEqual(res['branch'], 'adaface')
        self.assertTrue(res['same'])
        self.assertEqual(res['threshold'], -1.0)
        self.assertEqual(res['unit'], 'cosine similarity')
        code, out, _ = _run(['compare', self.imgs[0], self.imgs[1], '--branch',
                             'adaface', '--threshold', '-1'] + self.model)
        self.assertIn('threshold -1.0000, cosine similarity; threshold given)',
                      out)

    def test_unavailable_branch_exits_2(self):
        d = self.tmp.name
        nocal = ['--config', osp.join(d, 'tiny.py'), '--checkpoint',
                 osp.join(d, 'nocal.pth')]
        write_checkpoint(osp.join(d, 'nocal.pth'), calibration=None)
        # Before: "DIFFERENT person (adaface 0.7370 < threshold 1.4)".
        code, out, err = _run(['compare', self.imgs[0], self.imgs[0], '--branch',
                               'fused', '--threshold', '1.4'] + nocal)
        self.assertEqual((code, out), (2, ''))
        self.assertIn('the fused branch (decision_branch / --branch) is one this '
                      'model cannot give: the checkpoint holds no calibration',
                      err)
        code, out, _ = _run(['compare', self.imgs[0], self.imgs[1]] + nocal)
        self.assertEqual(code, 0)
        self.assertIn('decision unknown: no threshold for the adaface branch '
                      '(cosine similarity)', out)

    def test_backbone_only_checkpoint(self):
        import torch

        from oaml_mm.models.utils import oaml_to_insightface
        from oaml_mm.registry import MODELS
        from tests.test_apis.helpers import TINY_MODEL
        d = self.tmp.name
        backbone = dict(TINY_MODEL['backbone'], conv_shortcut_on_stride=True,
                        embedding_bn_affine=True)
        torch.manual_seed(1)
        src = MODELS.build(backbone).eval()
        torch.save(oaml_to_insightface(src.state_dict(), (2, 2, 2, 2)),
                   osp.join(d, 'insightface_r18.pth'))
        conv = osp.join(d, 'converted.pth')
        sys.path.insert(0, osp.join(ROOT, 'tools', 'model_converters'))
        import insightface2oaml
        with contextlib.redirect_stdout(io.StringIO()):
            self.assertEqual(insightface2oaml.main(
                [osp.join(d, 'insightface_r18.pth'), conv]), 0)
        cfg = write_config(osp.join(d, 'insight.py'),
                           dict(TINY_MODEL, backbone=backbone,
                                test_cfg=dict(flip_test=False)))
        model = ['--config', cfg, '--checkpoint', conv]
        # Before: "missing keys: head.kernel".
        code, out, err = _run(['compare', self.imgs[0], self.imgs[1], '--json',
                               '--threshold', '0.5'] + model)
        self.assertEqual(code, 0, err)
        res = json.loads(out)
        self.assertEqual(set(res['scores']), {'adaface'})
        x = torch.from_numpy(cv2.imread(self.imgs[0])).permute(2, 0, 1)[None]
        y = torch.from_numpy(cv2.imread(self.imgs[1])).permute(2, 0, 1)[None]
        with torch.no_grad():
            # TINY_MODEL's preprocessor takes BGR: cv2's order, mean/std 127.5.
            ea = src((x.float() - 127.5) / 127.5)[1]
            eb = src((y.float() - 127.5) / 127.5)[1]
        cos = float(torch.nn.functional.cosine_similarity(ea, eb)[0])
        self.assertAlmostEqual(res['scores']['adaface'], cos, places=4)
        self.assertEqual(res['same'], cos >= 0.5)
        code, _, err = _run(['compare', self.imgs[0], self.imgs[1], '--branch',
                             'qaconv', '--threshold', '-1.5'] + model)
        self.assertEqual(code, 2)
        self.assertIn('the qaconv branch (decision_branch / --branch) is one '
                      'this model cannot give: the model has no QAConv head '
                      '(absent from', err)

    def test_compare_with_landmarks(self):
        from oaml_mm.datasets.transforms import ARCFACE_REF_POINTS
        img = np.zeros((150, 180, 3), np.uint8)
        img[20:132, 30:142] = cv2.imread(self.imgs[2])
        path = osp.join(self.tmp.name, 'big.png')
        cv2.imwrite(path, img)
        lmk = osp.join(self.tmp.name, 'lmk.txt')
        pts = (ARCFACE_REF_POINTS + [30, 20]).reshape(-1)
        np.savetxt(lmk, np.stack([pts, pts]))
        code, out, err = _run(['compare', path, path, '--landmarks', lmk,
                               '--json'] + self.model)
        self.assertEqual(code, 0, err)
        self.assertAlmostEqual(json.loads(out)['scores']['adaface'], 1.0, 4)

    def test_landmarks_in_another_layout_refused(self):
        from oaml_mm.datasets.transforms import ARCFACE_REF_POINTS
        img = np.zeros((150, 180, 3), np.uint8)
        img[20:132, 30:142] = cv2.imread(self.imgs[2])
        path = osp.join(self.tmp.name, 'big_xy.png')
        cv2.imwrite(path, img)
        lmk = osp.join(self.tmp.name, 'lmk_xy.txt')
        pts = ARCFACE_REF_POINTS + [30, 20]
        xy = np.concatenate([pts[:, 0], pts[:, 1]])  # x1..x5 y1..y5
        np.savetxt(lmk, np.stack([xy, xy]))
        code, out, err = _run(['compare', path, path, '--landmarks', lmk,
                               '--json'] + self.model)
        self.assertEqual(code, 2, out)
        self.assertIn('read as all x then all y', err)
        self.assertEqual(len(err.strip().splitlines()), 1)

    def test_enrol_and_search(self):
        gallery = osp.join(self.tmp.name, 'g.pt')
        for name, imgs in (('ann', self.imgs[:2]), ('bob', self.imgs[2:3]),
                           ('ann', self.imgs[3:4])):
            code, out, err = _run(['enrol', *imgs, '--name', name, '--gallery',
                                   gallery] + self.model)
            self.assertEqual(code, 0, err)
        self.assertIn('ann: 3 image(s); gallery', out)
        self.assertIn('holds 2 identities', out)
        code, out, err = _run(['search', self.imgs[2], '--gallery', gallery,
                               '--top-k', '2', '--json'] + self.model)
        self.assertEqual(code, 0, err)
        hits = json.loads(out)
        self.assertEqual([h['name'] for h in hits][0], 'bob')
        self.assertIn('qaconv', hits[0])
        code, out, _ = _run(['search', self.imgs[2], '--gallery', gallery,
                             '--no-rerank'] + self.model)
        self.assertRegex(out.splitlines()[0], r' 1\. bob +score 1\.0000')

    def test_search_decides_and_damaged_inputs_exit_2(self):
        from tests.test_apis.helpers import flip_tensor_byte
        gallery = osp.join(self.tmp.name, 'verdict.pt')
        for name, img in (('ann', self.imgs[0]), ('bob', self.imgs[1])):
            code, _, err = _run(['enrol', img, '--name', name, '--gallery',
                                 gallery] + self.model)
            self.assertEqual(code, 0, err)
        code, out, err = _run(['search', self.imgs[1], '--gallery', gallery,
                               '--json'] + self.model)
        self.assertEqual(code, 0, err)
        hits = json.loads(out)
        self.assertEqual(hits[0]['name'], 'bob')
        for h in hits:
            self.assertEqual((h['branch'], h['threshold']), ('fused', 1.5))
            self.assertEqual(h['same'], h['score'] >= 1.5)
        code, out, err = _run(['search', self.imgs[1], '--gallery',
                               gallery] + self.model)
        first = out.splitlines()[0]
        self.assertRegex(first, r' 1\. bob +score -?\d+\.\d+  (SAME \(fused '
                         r'>=|different \(fused <) 1\.5000\)')
        self.assertIn('threshold calibrated at FAR=0.001 on test (fused '
                      'z-score)', out)
        # A damaged checkpoint: compare and search refuse in one line.
        bad = osp.join(self.tmp.name, 'bad.pth')
        write_checkpoint(bad)
        flip_tensor_byte(bad)
        model = ['--config', self.model[1], '--checkpoint', bad]
        for argv in (['compare', self.imgs[0], self.imgs[1]],
                     ['search', self.imgs[0], '--gallery', gallery]):
            code, out, err = _run(argv + model)
            self.assertEqual((code, out), (2, ''))
            self.assertRegex(err, r'^error: .*bad\.pth: member .* fails its '
                             r'CRC check; the file is damaged\n$')

    def test_errors_exit_2(self):
        code, _, err = _run(['compare', self.imgs[0], 'missing.jpg'] +
                            self.model)
        self.assertEqual(code, 2)
        self.assertIn('missing.jpg: no such image file', err)
        code, _, err = _run(['search', self.imgs[0], '--gallery',
                             osp.join(self.tmp.name, 'none.pt')] + self.model)
        self.assertEqual(code, 2)
        self.assertIn('no such gallery', err)
        code, _, err = _run(['compare', self.imgs[0], self.imgs[1]])
        self.assertEqual(code, 2)
        self.assertIn('--config and --checkpoint', err)

    def test_concurrent_enrols_both_kept(self):
        """Two enrols into one gallery at once: the second waits and merges.

        Each run's gallery load waits (up to 2 s) for the other's: without the
        lock both read the same file and the later save drops a name.
        """
        from oaml_mm.apis import FaceGallery
        gallery = osp.join(self.tmp.name, 'race.pt')
        code, _, err = _run(['enrol', self.imgs[0], '--name', 'zed',
                             '--gallery', gallery] + self.model)
        self.assertEqual(code, 0, err)
        real_load = FaceGallery.load
        events = [threading.Event(), threading.Event()]
        calls = []

        def slow_load(path, rec, *args, **kwargs):
            g = real_load(path, rec, *args, **kwargs)
            i = len(calls)
            calls.append(i)
            if i < 2:
                events[i].set()
                events[1 - i].wait(2.0)
            return g

        codes = []

        def enrol(name, img):
            codes.append(infer.main(['enrol', img, '--name', name, '--gallery',
                                     gallery] + self.model))

        threads = [threading.Thread(target=enrol, args=(n, img)) for n, img in
                   (('ann', self.imgs[1]), ('bob', self.imgs[2]))]
        with mock.patch.object(FaceGallery, 'load', slow_load), \
                contextlib.redirect_stdout(io.StringIO()):
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        self.assertEqual(codes, [0, 0])
        self.assertEqual(sorted(real_load(gallery, infer._recognizer(
            infer.parse_args(['search', 'x', '--gallery', gallery] +
                             self.model))).names), ['ann', 'bob', 'zed'])

    def test_bad_output_paths_refused_before_work(self):
        d = self.tmp.name
        with mock.patch('oaml_mm.apis.FaceRecognizer.extract') as extract:
            for argv, msg in (
                    (['enrol', self.imgs[0], '--name', 'ann', '--gallery', d],
                     f'--gallery {d!r} is a directory; expected a file'),
                    (['compare', self.imgs[0], self.imgs[1], '--show',
                      osp.join(d, 'x.txt')],
                     'OpenCV cannot write .txt pictures; expected an image'),
                    (['compare', self.imgs[0], self.imgs[1], '--show', d],
                     f'--show {d!r} is a directory'),
                    (['search', self.imgs[0], '--gallery', d],
                     f'--gallery {d!r} is a directory; expected a gallery'),
                    (['enrol', self.imgs[0], '--name', 'ann', '--gallery',
                      '/proc/oaml_gallery.pt'],
                     "--gallery '/proc/oaml_gallery.pt' cannot be written")):
                with self.subTest(argv[0], expected=msg):
                    code, out, err = _run(argv + self.model)
                    self.assertEqual((code, out), (2, ''))
                    self.assertIn(msg, err)
                    self.assertEqual(len(err.strip().splitlines()), 1)
            extract.assert_not_called()

    def test_meaningless_options_refused(self):
        gallery = osp.join(self.tmp.name, 'names.pt')
        for argv, msg in (
                (['compare', 'a', 'b', '--threshold', 'nan'], 'finite number'),
                (['compare', 'a', 'b', '--threshold', 'inf'], 'finite number'),
                (['search', 'a', '--gallery', 'g', '--top-k', '0'], '>= 1'),
                (['search', 'a', '--gallery', 'g', '--top-k', '-2'], '>= 1'),
                (['search', 'a', '--gallery', 'g', '--rerank-k', '0'], '>= 1')):
            err = io.StringIO()
            with self.subTest(argv=argv), contextlib.redirect_stderr(err), \
                    self.assertRaises(SystemExit) as cm:
                infer.main(argv)
            self.assertEqual(cm.exception.code, 2)
            self.assertIn(msg, err.getvalue())
        for name in ('  ', 'ann\nbob 0.99', 'x\x1b[2J'):
            with self.subTest(name=name):
                code, out, err = _run(['enrol', self.imgs[0], '--name', name,
                                       '--gallery', gallery] + self.model)
                self.assertEqual((code, out), (2, ''))
                self.assertIn('identity name', err)
        self.assertFalse(osp.exists(gallery))


if __name__ == '__main__':
    unittest.main()
