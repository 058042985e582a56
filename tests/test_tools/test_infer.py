"""tools/infer.py compare / enrol / search, run in-process as a user runs them."""
import contextlib
import io
import json
import os.path as osp
import sys
import tempfile
import unittest

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
                         r'1\.5000\)')
        pic = cv2.imread(show)
        self.assertEqual(pic.shape[1], 2 * 336 + 90 + 40)
        code, out, _ = _run(['compare', self.imgs[0], self.imgs[1], '--json',
                             '--branch', 'adaface', '--threshold', '-1'] +
                            self.model)
        res = json.loads(out)
        self.assertEqual(res['branch'], 'adaface')
        self.assertTrue(res['same'])
        self.assertEqual(res['threshold'], -1.0)

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


if __name__ == '__main__':
    unittest.main()
