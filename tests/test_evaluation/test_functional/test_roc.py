import unittest

import numpy as np
from sklearn import metrics as skm

from oaml_mm.evaluation.functional import auc, eer, roc_curve, tar_at_far


def published_rule(scores, labels, fars):
    """insightface IJB_11 table rule written out: flip, min over (|diff|, index)."""
    fpr, tpr, _ = skm.roc_curve(labels, scores)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    out = {}
    for far in fars:
        _, i = min(zip(abs(fpr - far), range(len(fpr))))
        out[far] = tpr[i]
    return out


class TestROC(unittest.TestCase):

    def setUp(self):
        rng = np.random.RandomState(0)
        self.labels = rng.rand(5000) < 0.2
        self.scores = (rng.randn(5000) + 2.0 * self.labels).round(2)

    def test_roc_matches_sklearn(self):
        for drop in (True, False):
            ours = roc_curve(self.scores, self.labels, drop_intermediate=drop)
            theirs = skm.roc_curve(self.labels, self.scores,
                                   drop_intermediate=drop)
            for a, b in zip(ours, theirs):
                np.testing.assert_allclose(a, b)

    def test_auc_matches_sklearn(self):
        self.assertAlmostEqual(
            auc(self.scores, self.labels),
            skm.roc_auc_score(self.labels, self.scores), places=12)

    def test_closest_rule_matches_published_code(self):
        fars = (1e-4, 1e-3, 1e-2, 1e-1, 0.3)
        ours = tar_at_far(self.scores, self.labels, fars)
        ref = published_rule(self.scores, self.labels, fars)
        for f in fars:
            self.assertEqual(ours[f], ref[f])

    def test_hand_computed_rules(self):
        # impostors 0.7, 0.1; genuine 0.9, 0.8, 0.2. ROC points (fpr, tpr):
        # (0,0) (0,2/3) (.5,2/3) (.5,1) (1,1) -> target 0.4 is closest to fpr 0.5.
        s = [0.9, 0.8, 0.7, 0.2, 0.1]
        y = [1, 1, 0, 1, 0]
        self.assertEqual(tar_at_far(s, y, [0.4])[0.4], 1.0)
        self.assertAlmostEqual(tar_at_far(s, y, [0.4], rule='strict')[0.4], 2 / 3)
        self.assertAlmostEqual(tar_at_far(s, y, [0.0], rule='strict')[0.0], 2 / 3)
        with self.assertRaises(ValueError):
            tar_at_far(s, y, [0.1], rule='nearest')

    def test_strict_never_exceeds_target(self):
        fpr, tpr, thr = roc_curve(self.scores, self.labels,
                                  drop_intermediate=False)
        for far, tar in tar_at_far(self.scores, self.labels, (1e-3, 1e-2, 0.05),
                                   rule='strict').items():
            ok = fpr <= far
            self.assertEqual(tar, tpr[ok].max())

    def test_eer(self):
        self.assertEqual(eer([0.9, 0.8, 0.3, 0.2], [1, 1, 0, 0]), 0.0)
        # symmetric overlap: one genuine below one impostor out of two each
        self.assertAlmostEqual(eer([0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0]), 0.5)
        e = eer(self.scores, self.labels)
        fpr, tpr, _ = roc_curve(self.scores, self.labels, False)
        i = np.argmin(np.abs(fpr - (1 - tpr)))
        self.assertLess(abs(e - fpr[i]), 0.01)

    def test_one_class_raises(self):
        with self.assertRaises(ValueError):
            roc_curve([0.1, 0.2], [1, 1])
