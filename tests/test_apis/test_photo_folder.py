"""oaml_mm.apis.photo_folder: the Python API of tools/dataset_converters/align_faces."""
import json
import os
import os.path as osp
import tempfile
import unittest

import cv2
import numpy as np

from oaml_mm.apis import align_folder
from oaml_mm.apis.photo_folder import JOURNAL, format_summary
from oaml_mm.errors import ConfigError, DataFormatError


class TestAlignFolder(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.src = osp.join(self.tmp.name, 'raw')
        self.out = osp.join(self.tmp.name, 'aligned')
        rng = np.random.default_rng(0)
        # 112x112 crops with detect='auto' are taken as aligned: no detector.
        for rel in ('alice/a1.png', 'alice/a2.png', 'bob/b1.png'):
            os.makedirs(osp.dirname(osp.join(self.src, rel)), exist_ok=True)
            cv2.imwrite(osp.join(self.src, rel),
                        rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))
        open(osp.join(self.src, 'bob', 'empty.png'), 'wb').close()

    def tearDown(self):
        self.tmp.cleanup()

    def _align(self, **kw):
        return align_folder(self.src, self.out, detect='auto', workers=0,
                            progress=False, **kw)

    def test_aligns_reports_and_resumes(self):
        rep = self._align()
        self.assertEqual((rep['photos'], rep['aligned'], rep['failed'],
                          rep['faces']), (4, 3, 1, 3))
        self.assertEqual(rep['paths'], {'aligned-input': 3})
        self.assertEqual(rep['failures'][0]['src'], osp.join('bob', 'empty.png'))
        for name in ('alice/a1.jpg', 'alice/a2.jpg', 'bob/b1.jpg'):
            img = cv2.imread(osp.join(self.out, name))
            self.assertEqual(img.shape, (112, 112, 3), name)
        with open(osp.join(self.out, 'align_report.json')) as f:
            self.assertEqual(json.load(f)['aligned'], 3)
        self.assertTrue(osp.isfile(osp.join(self.out, JOURNAL)))
        self.assertEqual(
            format_summary(rep),
            f'3/4 photos aligned (3 faces: aligned-input 3); 1 failed, listed '
            f'in {osp.join(self.out, "align_failures.txt")}')
        # A rerun keeps the aligned photos and retries the failure only.
        again = self._align()
        self.assertEqual(again['rerun'],
                         dict(retried=1, retried_ok=0, changed=0, missing=0))
        self.assertTrue(format_summary(again).startswith(
            'retried 1 earlier failure(s): 0 now aligned, 1 still failing'))

    def test_refuses_other_options_and_bad_inputs(self):
        self._align()
        with self.assertRaisesRegex(ConfigError, r'--size 112 -> 96'):
            self._align(size=96)
        with self.assertRaisesRegex(ConfigError, 'needs one sub-folder'):
            align_folder(osp.join(self.src, 'alice'), self.out + '2', fmt='rec',
                         detect='auto', workers=0, progress=False)
        with self.assertRaisesRegex(DataFormatError, 'not a folder of photos'):
            align_folder(osp.join(self.tmp.name, 'none'), self.out + '3',
                         workers=0, progress=False)


if __name__ == '__main__':
    unittest.main()
