"""IJB meta file parsers: values and line-numbered errors."""
import os
import os.path as osp
import tempfile
import unittest

import numpy as np

from oaml_mm.datasets.ijb import (ijb_meta_paths, read_ijb_landmarks,
                                  read_ijb_template_pairs, read_ijb_tid_mid)
from oaml_mm.errors import DataFormatError, MissingFileError


class TestIJBMeta(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.paths = ijb_meta_paths(self.tmp.name, 'IJBC')
        os.makedirs(osp.join(self.tmp.name, 'meta'))

    def tearDown(self):
        self.tmp.cleanup()

    def _write(self, key, text):
        with open(self.paths[key], 'w') as f:
            f.write(text)

    def test_paths(self):
        self.assertTrue(self.paths['tid_mid'].endswith('meta/ijbc_face_tid_mid.txt'))
        self.assertTrue(ijb_meta_paths('r', 'IJBB')['pairs'].endswith(
            'ijbb_template_pair_label.txt'))
        with self.assertRaises(ValueError):
            ijb_meta_paths('r', 'IJBA')

    def test_tid_mid(self):
        self._write('tid_mid', '1.jpg 1 69544\n2.jpg 1 3720\n\n')
        names, tids, mids = read_ijb_tid_mid(self.paths['tid_mid'])
        self.assertEqual(names, ['1.jpg', '2.jpg'])
        np.testing.assert_array_equal(tids, [1, 1])
        np.testing.assert_array_equal(mids, [69544, 3720])
        self._write('tid_mid', '1.jpg 1 69544\n2.jpg x 3720\n')
        with self.assertRaisesRegex(DataFormatError, 'line 2'):
            read_ijb_tid_mid(self.paths['tid_mid'])
        self._write('tid_mid', '1.jpg 1\n')
        with self.assertRaisesRegex(DataFormatError, 'line 1.*expected 3'):
            read_ijb_tid_mid(self.paths['tid_mid'])

    def test_pairs(self):
        self._write('pairs', '1 11065 1\n1 11066 0\n')
        t1, t2, lab = read_ijb_template_pairs(self.paths['pairs'])
        np.testing.assert_array_equal(t1, [1, 1])
        np.testing.assert_array_equal(t2, [11065, 11066])
        np.testing.assert_array_equal(lab, [1, 0])
        self._write('pairs', '1 2 1\n1 2 1\n1 2 z\n')
        with self.assertRaisesRegex(DataFormatError, 'line 3'):
            read_ijb_template_pairs(self.paths['pairs'])
        self._write('pairs', '1 2 1\n1 2\n3 4 1 5\n')
        with self.assertRaisesRegex(DataFormatError, 'line 2'):
            read_ijb_template_pairs(self.paths['pairs'])
        self._write('pairs', '1 2 1\n1 2 7\n')
        with self.assertRaisesRegex(DataFormatError, 'line 2.*label'):
            read_ijb_template_pairs(self.paths['pairs'])

    def test_landmarks(self):
        vals = ' '.join(str(float(v)) for v in range(10))
        self._write('landmarks', f'1.jpg {vals} 0.9\n')
        names, lmk, score = read_ijb_landmarks(self.paths['landmarks'])
        self.assertEqual(names, ['1.jpg'])
        self.assertEqual(lmk.shape, (1, 5, 2))
        np.testing.assert_allclose(lmk[0, 1], [2.0, 3.0])
        np.testing.assert_allclose(score, [0.9])
        self._write('landmarks', f'1.jpg {vals} 0.9\n2.jpg {vals} nan?\n')
        with self.assertRaisesRegex(DataFormatError, 'line 2'):
            read_ijb_landmarks(self.paths['landmarks'])

    def test_missing(self):
        with self.assertRaisesRegex(MissingFileError, 'ijbc_face_tid_mid'):
            read_ijb_tid_mid(self.paths['tid_mid'])


if __name__ == '__main__':
    unittest.main()
