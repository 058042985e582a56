"""IJB meta file parsers: values and line-numbered errors."""
import os
import os.path as osp
import tempfile
import unittest

import numpy as np

from oaml_mm.datasets.ijb import (ijb_meta_paths, read_1n_csv,
                                  read_ijb_landmarks, read_ijb_template_pairs,
                                  read_ijb_tid_mid)
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

    def test_byte_order_mark_read_correctly(self):
        # A Windows editor's BOM once became part of the first image name, the
        # first template id or the CSV header.
        bom = '\ufeff'
        for key, text in (('tid_mid', '1.jpg 1 69544\n'),
                          ('pairs', '1 11065 1\n'),
                          ('landmarks', '1.jpg ' + ' '.join(['1.0'] * 10) +
                           ' 0.9\n')):
            with open(self.paths[key], 'w', encoding='utf-8') as f:
                f.write(bom + text)
        self.assertEqual(read_ijb_tid_mid(self.paths['tid_mid'])[0], ['1.jpg'])
        np.testing.assert_array_equal(
            read_ijb_template_pairs(self.paths['pairs'])[0], [1])
        self.assertEqual(read_ijb_landmarks(self.paths['landmarks'])[0],
                         ['1.jpg'])
        csv_path = osp.join(self.tmp.name, 'meta', 'probe.csv')
        with open(csv_path, 'w', encoding='utf-8') as f:
            f.write(bom + 'TEMPLATE_ID,SUBJECT_ID\n5,7\n')
        t, sub = read_1n_csv(csv_path)
        np.testing.assert_array_equal(t, [5])

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

    def test_1n_csv(self):
        from oaml_mm.datasets.ijb import read_1n_csv
        from oaml_mm.evaluation.metrics.ijb_metric import \
            read_1n_csv as metric_read_1n_csv
        self.assertIs(metric_read_1n_csv, read_1n_csv)
        path = osp.join(self.tmp.name, 'meta', 'ijbc_1N_probe_mixed.csv')
        with open(path, 'w') as f:
            f.write('TEMPLATE_ID,SUBJECT_ID,FILENAME\n7,3,img/1.jpg\n'
                    '7,3,img/2.jpg\n\n9,4,img/3.jpg\n')
        tids, subj = read_1n_csv(path)
        np.testing.assert_array_equal(tids, [7, 9])
        np.testing.assert_array_equal(subj, [3, 4])
        # Non-UTF-8 once gave a bare UnicodeDecodeError; huge ids OverflowError.
        for raw, what in (
                (b'TEMPLATE_ID,SUBJECT_ID\n7,3\n8,\xe9\n', 'line 3.*not UTF-8'),
                (b'TEMPLATE_ID,SUBJECT_ID\n7,99999999999999999999\n',
                 'line 2.*64-bit'),
                (b'TEMPLATE_ID,SUBJECT_ID\n7,3\n7,4\n',
                 "line 3, field 'SUBJECT_ID'"),
                (b'ID,SUBJECT\n7,3\n', 'line 1.*TEMPLATE_ID')):
            with open(path, 'wb') as f:
                f.write(raw)
            with self.assertRaisesRegex(DataFormatError,
                                        rf'probe_mixed\.csv, record {what}'):
                read_1n_csv(path)

    def test_missing(self):
        with self.assertRaisesRegex(MissingFileError, 'ijbc_face_tid_mid'):
            read_ijb_tid_mid(self.paths['tid_mid'])


if __name__ == '__main__':
    unittest.main()
