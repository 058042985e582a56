import unittest

import numpy as np
from sklearn.model_selection import KFold

from oaml_mm.evaluation.functional import (kfold_split, score_thresholds,
                                           verification_10fold,
                                           verification_10fold_scores)


def reference_10fold(embeddings, issame, nfolds=10):
    """The insightface loop, written out literally (broadcast compare per threshold)."""
    thresholds = np.arange(0, 4, 0.01)
    e1, e2 = embeddings[0::2], embeddings[1::2]
    dist = np.sum(np.square(e1 - e2), 1)
    issame = np.asarray(issame)
    accs, thrs = [], []
    for train, test in KFold(n_splits=nfolds, shuffle=False).split(
            np.arange(len(issame))):
        acc_train = [np.mean((dist[train] < t) == issame[train])
                     for t in thresholds]
        best = int(np.argmax(acc_train))
        thrs.append(thresholds[best])
        accs.append(np.mean((dist[test] < thresholds[best]) == issame[test]))
    return np.mean(accs), np.std(accs), np.mean(thrs)


class TestKFold(unittest.TestCase):

    def test_matches_sklearn(self):
        for n, k in [(10, 10), (23, 10), (6000, 10), (7, 3)]:
            ours = kfold_split(n, k)
            theirs = list(KFold(n_splits=k, shuffle=False).split(np.arange(n)))
            self.assertEqual(len(ours), len(theirs))
            for (a, b), (c, d) in zip(ours, theirs):
                np.testing.assert_array_equal(a, c)
                np.testing.assert_array_equal(b, d)

    def test_bad_folds(self):
        with self.assertRaises(ValueError):
            kfold_split(5, 10)


class TestVerification10Fold(unittest.TestCase):

    def _data(self, n_pairs=300, noise=0.9, seed=0):
        rng = np.random.RandomState(seed)
        a = rng.randn(n_pairs, 16)
        issame = rng.rand(n_pairs) < 0.5
        b = np.where(issame[:, None], a + noise * rng.randn(n_pairs, 16),
                     rng.randn(n_pairs, 16))
        emb = np.empty((2 * n_pairs, 16))
        emb[0::2], emb[1::2] = a, b
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        return emb.astype(np.float32), issame

    def test_matches_reference_loop(self):
        for seed in range(3):
            emb, issame = self._data(seed=seed)
            res = verification_10fold(emb, issame)
            acc, std, thr = reference_10fold(emb, issame)
            self.assertAlmostEqual(res['accuracy'], acc, places=12)
            self.assertAlmostEqual(res['std'], std, places=12)
            self.assertAlmostEqual(res['threshold'], thr, places=12)
            self.assertEqual(res['fold_accuracy'].shape, (10, ))
            self.assertLess(res['accuracy'], 1.0)  # a real, non-trivial case

    def test_hand_computed(self):
        # 10 pairs, one per fold; distances 0 (same) or 2 (different) except one
        # "same" pair at distance 2: every fold's best threshold is the first one
        # above 0 (0.01), and only the fold holding the bad pair errs.
        e = np.eye(3, dtype=np.float32)
        emb = np.concatenate([[e[0], e[0]] if i % 2 == 0 else [e[1], e[2]]
                              for i in range(10)])
        issame = [i % 2 == 0 for i in range(10)]
        issame[1] = True  # pair 1 is labelled same but at distance 2
        res = verification_10fold(emb, issame)
        self.assertAlmostEqual(res['accuracy'], 0.9)
        self.assertAlmostEqual(res['threshold'], 0.01)
        self.assertAlmostEqual(res['std'], 0.3)

    def test_bad_shape(self):
        with self.assertRaises(ValueError):
            verification_10fold(np.zeros((3, 4)), [True])


class TestScoreVariant(unittest.TestCase):

    def test_thresholds_are_midpoints(self):
        t = score_thresholds(np.array([3., 1., 2., 2.]))
        np.testing.assert_allclose(t, [-1., 1.5, 2.5, 5.])

    def test_cosine_scores_match_distance_protocol_when_separable(self):
        rng = np.random.RandomState(1)
        emb, issame = TestVerification10Fold()._data(n_pairs=200, noise=0.3)
        cos = np.sum(emb[0::2] * emb[1::2], 1)
        a = verification_10fold(emb, issame)['accuracy']
        b = verification_10fold_scores(cos, issame)['accuracy']
        # Midpoint thresholds are at least as fine as the 0.01 grid.
        self.assertGreaterEqual(b + 1e-12, a - 0.02)
        self.assertGreater(b, 0.5)
        del rng

    def test_hand_computed(self):
        # Scores above 5 are genuine except one outlier; first-best midpoint is 5.
        scores = np.array([9., 1.] * 10)
        issame = np.array([True, False] * 10)
        issame[3] = True  # an impostor-looking genuine pair (score 1)
        res = verification_10fold_scores(scores, issame)
        self.assertAlmostEqual(res['accuracy'], 0.95)
        self.assertAlmostEqual(res['threshold'], 5.0)

    def test_scale_invariance(self):
        rng = np.random.RandomState(2)
        s = rng.randn(500)
        y = s + rng.randn(500) > 0
        r1 = verification_10fold_scores(s, y)
        r2 = verification_10fold_scores(30 * s + 7, y)
        self.assertAlmostEqual(r1['accuracy'], r2['accuracy'], places=12)
        self.assertAlmostEqual(30 * r1['threshold'] + 7, r2['threshold'],
                               places=9)
