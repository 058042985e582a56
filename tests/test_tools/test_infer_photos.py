"""tools/infer.py on unaligned photos: detection report, --show panels, no face."""
import contextlib
import io
import json
import os.path as osp
import sys
import tempfile
import unittest

import cv2
import numpy as np
import skimage.data

from tests.test_apis.helpers import write_checkpoint, write_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools'))
import infer  # noqa: E402


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = infer.main(argv)
    return code, out.getvalue(), err.getvalue()


class TestInferPhotos(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        d = cls.tmp.name
        cls.model = ['--config', write_config(osp.join(d, 'tiny.py')),
                     '--checkpoint', osp.join(d, 'tiny.pth')]
        write_checkpoint(osp.join(d, 'tiny.pth'))
        astro = skimage.data.astronaut()[:, :, ::-1]
        cls.astro = osp.join(d, 'astro.jpg')
        cls.flip = osp.join(d, 'flip.png')
        cls.coffee = osp.join(d, 'coffee.jpg')
        cls.two = osp.join(d, 'two.png')
        cv2.imwrite(cls.astro, astro)
        cv2.imwrite(cls.flip, cv2.resize(astro[:, ::-1], (400, 400)))
        cv2.imwrite(cls.coffee, skimage.data.coffee()[:, :, ::-1])
        canvas = np.full((512, 900, 3), 128, np.uint8)
        canvas[:, :512] = astro
        canvas[100:356, 600:856] = cv2.resize(astro, (256, 256))
        cv2.imwrite(cls.two, canvas)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_compare_photos_reports_and_shows(self):
        show = osp.join(self.tmp.name, 'show.png')
        code, out, err = _run(['compare', self.astro, self.flip, '--show', show]
                              + self.model)
        self.assertEqual(code, 0, err)
        lines = out.splitlines()
        self.assertRegex(lines[0], r'^face: astro\.jpg: detected-5pt, detector '
                         r'score 1\.000$')
        self.assertRegex(lines[1], r'^face: flip\.png: detected-5pt')
        pic = cv2.imread(show)
        # Two photo panels above the 2 x 336 px comparison picture.
        self.assertGreater(pic.shape[0], 2 * 336 + 336)
        code, out, _ = _run(['compare', self.astro, self.flip, '--json',
                             '--align', 'eyes'] + self.model)
        res = json.loads(out)
        self.assertEqual([f['path'] for f in res['faces']],
                         ['detected-eyes'] * 2)
        self.assertGreater(res['faces'][0]['score'], 0.99)

    def test_no_face_is_a_clear_error(self):
        code, out, err = _run(['compare', self.astro, self.coffee] + self.model)
        self.assertEqual(code, 2)
        self.assertIn(f'error: {self.coffee}: no face found', err)
        boxes = osp.join(self.tmp.name, 'boxes.txt')
        with open(boxes, 'w') as f:
            f.write('-\n150 60 330 300\n')
        code, out, err = _run(['compare', self.astro, self.coffee, '--boxes',
                               boxes, '--json'] + self.model)
        self.assertEqual(code, 0, err)
        self.assertEqual([f['path'] for f in json.loads(out)['faces']],
                         ['detected-5pt', 'given-box'])

    def test_enrol_and_search_all_faces(self):
        gallery = osp.join(self.tmp.name, 'g.pt')
        code, out, err = _run(['enrol', '--gallery', gallery, '--name', 'eileen',
                               self.astro] + self.model)
        self.assertEqual(code, 0, err)
        self.assertIn('eileen: 1 image(s)', out)
        show = osp.join(self.tmp.name, 'probe.png')
        code, out, err = _run(['search', self.two, '--gallery', gallery,
                               '--faces', 'all', '--json', '--show', show] +
                              self.model)
        self.assertEqual(code, 0, err)
        res = json.loads(out)
        self.assertEqual(len(res), 2)
        self.assertEqual([r['face']['path'] for r in res], ['detected-5pt'] * 2)
        self.assertEqual(res[0]['hits'][0]['name'], 'eileen')
        self.assertIsNotNone(cv2.imread(show))
        code, out, err = _run(['search', self.two, '--gallery', gallery] +
                              self.model)
        self.assertEqual(code, 0, err)
        self.assertEqual(out.count('face: two.png'), 1)  # largest face only


if __name__ == '__main__':
    unittest.main()
