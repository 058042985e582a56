import unittest

import numpy as np
import torch

from oaml_mm.evaluation.functional import (cosine_pairs, fuse_scores,
                                           impostor_stats, match_all_then_pick,
                                           match_listed_pairs)


def toy_matcher(a, b, va=None, vb=None):
    """Row-wise: sum of products weighted by both visibilities."""
    va = torch.ones_like(a[:, :1]) if va is None else va
    vb = torch.ones_like(b[:, :1]) if vb is None else vb
    return (a * b * va * vb).flatten(1).sum(1)


def toy_match(p, g, pv=None, gv=None):
    pv = torch.ones_like(p[:, :1]) if pv is None else pv
    gv = torch.ones_like(g[:, :1]) if gv is None else gv
    return (p * pv).flatten(1) @ (g * gv).flatten(1).T


class TestFusion(unittest.TestCase):

    def test_impostor_stats(self):
        s = np.array([1., 3., 10., 20.])
        y = np.array([0, 0, 1, 1])
        self.assertEqual(impostor_stats(s, y), (2.0, 1.0))
        self.assertEqual(impostor_stats(s)[0], 8.5)

    def test_fuse_hand_computed(self):
        a = np.array([0.1, 0.3, 0.9])
        b = np.array([10., 30., 50.])
        y = np.array([0, 0, 1])
        f = fuse_scores([a, b], [0.5, 0.5], labels=y)
        # impostor stats: a (0.2, 0.1), b (20, 10)
        np.testing.assert_allclose(f, [-1.0, 1.0, 0.5 * 7 + 0.5 * 3])
        with self.assertRaises(ValueError):
            fuse_scores([a], [0.5, 0.5])


class TestPairScoring(unittest.TestCase):

    def test_cosine_pairs(self):
        e = torch.randn(10, 4)
        ia, ib = torch.randint(0, 10, (50, )), torch.randint(0, 10, (50, ))
        got = cosine_pairs(e, ia, ib, chunk=7)
        ref = torch.nn.functional.cosine_similarity(e[ia], e[ib])
        torch.testing.assert_close(got, ref)

    def test_listed_equals_all_then_pick(self):
        maps = torch.randn(12, 3, 2, 2).half()
        vis = torch.rand(12, 1, 2, 2)
        ia = torch.randint(0, 5, (40, ))
        ib = torch.randint(5, 12, (40, ))
        calls = []
        got = match_listed_pairs(toy_matcher, maps, vis, ia, ib, chunk=16,
                                 progress=calls.append)
        self.assertEqual(calls, [16, 16, 8])
        full, picked, blocks = match_all_then_pick(
            toy_match, maps, vis, torch.arange(5), torch.arange(5, 12), ia, ib,
            block=3)
        self.assertEqual(blocks, 2 * 3)
        self.assertEqual(full.shape, (5, 7))
        torch.testing.assert_close(got, picked, atol=1e-5, rtol=1e-5)

    def test_max_blocks_leaves_nan(self):
        maps = torch.randn(6, 2, 1, 1)
        full, _, blocks = match_all_then_pick(
            toy_match, maps, None, torch.arange(3), torch.arange(3, 6),
            torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long),
            block=2, max_blocks=1)
        self.assertEqual(blocks, 1)
        self.assertTrue(torch.isnan(full).any())
        self.assertFalse(torch.isnan(full[:2, :2]).any())
