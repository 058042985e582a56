"""Tiled listed-pair scoring: same scores as row-wise, bounded work, tile grouping."""
import unittest

import torch
import torch.nn.functional as F

import oaml_mm  # noqa: F401
from oaml_mm.errors import ConfigError
from oaml_mm.evaluation.functional import (cosine_pairs, cosine_pairs_tiled,
                                           match_listed_pairs, plan_pair_units,
                                           score_pairs_tiled, score_units,
                                           split_units, tile_pair_order)
from oaml_mm.models.heads import QAConvHead


def small_head(vis_mode='seed'):
    head = QAConvHead(in_channels=8, feat_size=3, vis_mode=vis_mode)
    with torch.no_grad():
        # Non-trivial running statistics: a dense tile must use them, not the
        # statistics of its own pairs.
        head.bn.running_mean.fill_(0.2)
        head.bn.running_var.fill_(0.5)
        head.logit_bn.running_mean.fill_(-0.1)
        head.logit_bn.running_var.fill_(3.0)
        head.fc.weight.uniform_(-0.5, 0.5)
    return head.eval()


def listed(num_templates=30, n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    maps = F.normalize(torch.randn(num_templates, 8, 3, 3, generator=g),
                       dim=1).half()
    vis = torch.rand(num_templates, 1, 3, 3, generator=g)
    ia = torch.randint(0, num_templates // 3, (n, ), generator=g)
    ib = torch.randint(num_templates // 3, num_templates, (n, ), generator=g)
    return maps, vis, ia, ib


class TestTileOrder(unittest.TestCase):

    def test_groups_by_tiles_of_distinct_rows(self):
        # rows 0, 100, 200 on side a are distinct templates 0, 1, 2: with tile 2
        # rows 0 and 100 share a row tile although they are far apart.
        a = torch.tensor([200, 0, 100, 0, 200])
        b = torch.tensor([7, 9, 7, 8, 9])
        order, tid = tile_pair_order(a, b, tile=2)
        self.assertEqual(sorted(order.tolist()), list(range(5)))
        # column tiles: {7, 8} -> 0, {9} -> 1; two column tiles per row tile
        self.assertEqual(tid.tolist(), [2, 1, 0, 0, 3])
        self.assertEqual(order.tolist(), [2, 3, 1, 0, 4])
        self.assertTrue(bool((tid[order].diff() >= 0).all()))

    def test_empty_and_bad_tile(self):
        e = torch.empty(0, dtype=torch.long)
        order, tid = tile_pair_order(e, e)
        self.assertEqual(order.numel() + tid.numel(), 0)
        self.assertEqual(cosine_pairs_tiled(torch.randn(3, 4), e, e).numel(), 0)
        with self.assertRaises(ValueError):
            tile_pair_order(e, e, tile=0)


class TestTiledScoring(unittest.TestCase):

    def _check_equal(self, head, maps, vis, ia, ib, **kw):
        ref = match_listed_pairs(head.match_pairs, maps, vis, ia, ib, chunk=17)
        stats = {}
        got = score_pairs_tiled(head.match, head.match_pairs, maps, vis, ia, ib,
                                stats=stats, **kw)
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
        return got, stats

    def test_qaconv_equals_rowwise_all_modes(self):
        maps, vis, ia, ib = listed()
        with torch.no_grad():
            for mode in ('seed', 'gate', 'none'):
                head = small_head(mode)
                for tile, fill in ((1, 0.0), (3, 0.0), (4, 0.3), (64, 0.0),
                                   (5, 2.0)):
                    _, st = self._check_equal(head, maps, vis, ia, ib,
                                              tile=tile, min_fill=fill,
                                              chunk=11)
                    self.assertEqual(st['dense_pairs'] + st['rowwise_pairs'],
                                     ia.numel())
                    if fill == 0.0:
                        self.assertEqual(st['rowwise_pairs'], 0)
                    if fill > 1:
                        self.assertEqual(st['dense_tiles'], 0)
                # without visibility too
                self._check_equal(head, maps, None, ia, ib, tile=4, min_fill=0.)

    def test_mixed_tiles_and_permuted_order(self):
        maps, vis, ia, ib = listed(num_templates=60, n=90, seed=1)
        head = small_head()
        with torch.no_grad():
            got, st = self._check_equal(head, maps, vis, ia, ib, tile=4,
                                        min_fill=0.4, chunk=5)
            self.assertGreater(st['dense_tiles'], 0)
            self.assertGreater(st['rowwise_tiles'], 0)
            perm = torch.randperm(ia.numel(),
                                  generator=torch.Generator().manual_seed(2))
            again = score_pairs_tiled(head.match, head.match_pairs, maps, vis,
                                      ia[perm], ib[perm], tile=4, min_fill=0.4,
                                      chunk=5)
        torch.testing.assert_close(again, got[perm], atol=1e-5, rtol=1e-5)

    def test_cost_model_picks_dense_only_for_full_tiles(self):
        # tile 0: a 3x3 grid with all 9 pairs (fill 1); tile 1: a 3x3 grid with
        # only its diagonal (fill 1/3).
        a = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 4, 5])
        b = torch.tensor([6, 7, 8, 6, 7, 8, 6, 7, 8, 9, 10, 11])
        emb = torch.randn(12, 5)
        st = {}
        got = cosine_pairs_tiled(emb, a, b, tile=3, min_fill=0.5, stats=st)
        self.assertEqual(st, dict(dense_tiles=1, dense_scored=9, dense_pairs=9,
                                  rowwise_tiles=1, rowwise_pairs=3))
        torch.testing.assert_close(got, cosine_pairs(emb, a, b))

    def test_never_more_work_than_all_blocks(self):
        g = torch.Generator().manual_seed(3)
        ia = torch.randint(0, 40, (500, ), generator=g)
        ib = torch.randint(40, 100, (500, ), generator=g)
        emb = torch.randn(100, 6, generator=g)
        for tile in (1, 7, 16, 1000):
            st = {}
            cosine_pairs_tiled(emb, ia, ib, tile=tile, min_fill=0.0, stats=st)
            all_blocks = ia.unique().numel() * ib.unique().numel()
            self.assertLessEqual(st['dense_scored'], all_blocks)
        # one tile over everything scores exactly the distinct grid
        self.assertEqual(st['dense_scored'], all_blocks)

    def test_progress_chunks_and_dtype(self):
        maps, vis, ia, ib = listed(n=50, seed=4)
        calls, sizes = [], []
        head = small_head()

        def rowwise(a, b, va, vb):
            sizes.append(a.shape[0])
            self.assertEqual(a.dtype, torch.float32)
            return head.match_pairs(a, b, va, vb)

        with torch.no_grad():
            out = score_pairs_tiled(head.match, rowwise, maps, vis, ia, ib,
                                    tile=2, min_fill=0.9, chunk=8,
                                    progress=calls.append)
        self.assertEqual(sum(calls), 50)
        self.assertTrue(sizes and max(sizes) <= 8)
        self.assertEqual((out.dtype, out.device.type), (torch.float32, 'cpu'))

    def test_cosine_tiled_equals_rowwise(self):
        g = torch.Generator().manual_seed(5)
        emb = torch.randn(50, 16, generator=g) * 3
        ia = torch.randint(0, 50, (400, ), generator=g)
        ib = torch.randint(0, 50, (400, ), generator=g)
        ref = cosine_pairs(emb, ia, ib)
        for tile, fill in ((8, 0.0), (8, 0.2), (50, 0.0), (4, 5.0)):
            torch.testing.assert_close(
                cosine_pairs_tiled(emb, ia, ib, tile=tile, min_fill=fill,
                                   chunk=13), ref, atol=1e-6, rtol=1e-5)

    def test_training_mode_dense_differs(self):
        # Why the metric keeps the row-wise path while a BN is training: batch
        # statistics make a dense tile differ from row-wise scoring.
        maps, vis, ia, ib = listed(n=40, seed=6)
        head = small_head().train()
        with torch.no_grad():
            dense = score_pairs_tiled(head.match, head.match_pairs, maps, vis,
                                      ia, ib, tile=64, min_fill=0.0)
            rows = score_pairs_tiled(head.match, head.match_pairs, maps, vis,
                                     ia, ib, tile=64, min_fill=2.0, chunk=64)
        self.assertGreater(float((dense - rows).abs().max()), 1e-3)


class TestPairPlan(unittest.TestCase):
    """Canonical units: any split over ranks scores each pair identically."""

    def test_units_cover_every_pair_once(self):
        _, _, ia, ib = listed(num_templates=60, n=300)
        plan = plan_pair_units(ia, ib, tile=3, min_fill=0.8, chunk=7)
        kinds = {u[0] for u in plan.units}
        self.assertEqual(kinds, {True, False})  # both kinds occur
        pos = plan.positions()
        self.assertEqual(sorted(pos.tolist()), list(range(300)))
        self.assertEqual(plan.cost.numel(), len(plan.units))
        # Row-wise units hold at most chunk pairs; dense ones one tile.
        for dense, t, sel, _ in plan.units:
            if not dense:
                self.assertLessEqual(sel.numel(), 7)
                self.assertEqual(t, -1)

    def test_split_units_is_contiguous_and_balanced(self):
        self.assertEqual(split_units(torch.tensor([1., 1, 1, 1]), 2),
                         [(0, 2), (2, 4)])
        self.assertEqual(split_units(torch.tensor([10., 1, 1, 1]), 2),
                         [(0, 1), (1, 4)])
        self.assertEqual(split_units(torch.tensor([1., 10]), 2),
                         [(0, 1), (1, 2)])
        for world in (1, 2, 3, 7):
            cost = torch.rand(5, generator=torch.Generator().manual_seed(world))
            shares = split_units(cost, world)
            self.assertEqual(len(shares), world)
            self.assertEqual(shares[0][0], 0)
            self.assertEqual(shares[-1][1], 5)
            for (_, hi), (lo, _) in zip(shares, shares[1:]):
                self.assertEqual(hi, lo)
        self.assertEqual(split_units(torch.empty(0), 2), [(0, 0), (0, 0)])

    def test_any_world_size_gives_bit_identical_scores(self):
        head = small_head()
        maps, vis, ia, ib = listed(num_templates=60, n=400, seed=3)
        # Each pair also listed reversed: exact ties a split must not break.
        ia, ib = torch.cat([ia, ib]), torch.cat([ib, ia])
        plan = plan_pair_units(ia, ib, tile=4, min_fill=0.7, chunk=16)
        self.assertEqual({u[0] for u in plan.units}, {True, False})
        with torch.no_grad():
            one = score_pairs_tiled(head.match, head.match_pairs, maps, vis, ia,
                                    ib, tile=4, min_fill=0.7, chunk=16)
            for world in (2, 3, 5):
                got = torch.empty_like(one)
                for lo, hi in split_units(plan.cost, world):
                    pos, sc = score_units(plan, head.match, head.match_pairs,
                                          maps, vis, ia, ib, units=(lo, hi))
                    self.assertTrue(torch.equal(pos, plan.positions(lo, hi)))
                    got[pos] = sc
                self.assertTrue(torch.equal(got, one), world)

    def test_bad_settings_are_config_errors(self):
        e = torch.tensor([0, 1])
        with self.assertRaises(ConfigError):
            plan_pair_units(e, e, tile=0)
        with self.assertRaises(ConfigError):
            plan_pair_units(e, e, chunk=0)


if __name__ == '__main__':
    unittest.main()
