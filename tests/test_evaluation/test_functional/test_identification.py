import unittest

import numpy as np

from oaml_mm.evaluation.functional import identification_1n


class TestIdentification(unittest.TestCase):

    def test_hand_computed(self):
        # gallery subjects [1, 2, 3]; probes: subj 1 (rank 1), subj 2 (rank 2),
        # subj 3 (rank 3), subj 8 and 9 non-mated with best scores 0.5 / 0.95.
        s = np.array([[0.9, 0.1, 0.2],
                      [0.7, 0.6, 0.1],
                      [0.8, 0.7, 0.3],
                      [0.5, 0.4, 0.1],
                      [0.2, 0.95, 0.1]])
        r = identification_1n(s, [1, 2, 3, 8, 9], [1, 2, 3], ranks=(1, 2, 3),
                              fpirs=(0.5, 0.0))
        self.assertAlmostEqual(r['rank1'], 1 / 3)
        self.assertAlmostEqual(r['rank2'], 2 / 3)
        self.assertAlmostEqual(r['rank3'], 1.0)
        # FPIR 0.5: one of two non-mated probes alarms -> threshold 0.95: no hit.
        self.assertEqual(r['TPIR@FPIR=5e-01'], 0.0)
        # FPIR 0: threshold just above 0.95: still no hit (0.9 < 0.95).
        self.assertEqual(r['TPIR@FPIR=0e+00'], 0.0)
        r2 = identification_1n(s[:4], [1, 2, 3, 8], [1, 2, 3], fpirs=(1.0, ))
        # threshold 0.5 (the only non-mated best): probe 0 hits (0.9 >= 0.5).
        self.assertAlmostEqual(r2['TPIR@FPIR=1e+00'], 1 / 3)

    def test_all_mated_has_no_tpir(self):
        r = identification_1n(np.eye(2), [0, 1], [0, 1])
        self.assertEqual(r['rank1'], 1.0)
        self.assertTrue(np.isnan(r['TPIR@FPIR=1e-02']))

    def test_shape_error(self):
        with self.assertRaises(ValueError):
            identification_1n(np.zeros((2, 2)), [0], [0, 1])
