import unittest

import numpy as np
import torch
import torch.nn.functional as F

from oaml_mm.errors import ConfigError
from oaml_mm.evaluation.functional import (TemplateAccumulator, check_pooling,
                                           pool_templates)


class TestPoolTemplates(unittest.TestCase):

    def test_hand_computed(self):
        # template 7: media 1 = {(1,0),(3,0)} -> mean (2,0); media 2 = {(0,1)}
        # sum (2,1) -> (2,1)/sqrt(5). template 3: one image (0,-4) -> (0,-1).
        f = np.array([[1., 0], [3, 0], [0, 1], [0, -4]])
        t, p = pool_templates(f, [7, 7, 7, 3], [1, 1, 2, 5])
        self.assertEqual(t.tolist(), [3, 7])
        np.testing.assert_allclose(p[0], [0, -1], atol=1e-7)
        np.testing.assert_allclose(p[1], np.array([2, 1]) / np.sqrt(5),
                                   atol=1e-7)

    def test_norms_multiply_unit_features(self):
        f = np.array([[1., 0], [0, 1]])
        _, p = pool_templates(f, [1, 1], [1, 2], norms=np.array([3., 1.]))
        np.testing.assert_allclose(p[0], np.array([3, 1]) / np.sqrt(10),
                                   atol=1e-7)


class TestTemplateAccumulator(unittest.TestCase):

    def _stream(self, seed=0, n=40, t=6):
        g = torch.Generator().manual_seed(seed)
        rows = torch.randint(0, t, (n, ), generator=g)
        media = torch.randint(0, 3, (n, ), generator=g)
        feats = torch.randn(n, 8, generator=g)
        maps = F.normalize(torch.randn(n, 4, 2, 2, generator=g), dim=1)
        vis = torch.rand(n, 1, 2, 2, generator=g)
        return rows, media, feats, maps, vis

    def _weights(self, rows, media):
        key = rows * 10 + media
        _, inv, cnt = torch.unique(key, return_inverse=True, return_counts=True)
        return 1.0 / cnt[inv].double()

    def test_embeddings_match_pool_templates(self):
        rows, media, feats, _, _ = self._stream()
        acc = TemplateAccumulator(6, emb_dim=8)
        w = self._weights(rows, media)
        for s in range(0, 40, 7):  # uneven batches
            acc.add(rows[s:s + 7], feats[s:s + 7], weights=w[s:s + 7])
        t, ref = pool_templates(feats.numpy(), rows.numpy(), media.numpy())
        np.testing.assert_allclose(acc.embeddings()[t].numpy(), ref, atol=1e-5)
        self.assertEqual(int(acc.count.sum()), 40)

    def test_maps_are_visibility_weighted_means(self):
        rows, media, _, maps, vis = self._stream(seed=1)
        w = self._weights(rows, media)
        acc = TemplateAccumulator(6, map_shape=(4, 2, 2))
        for s in range(0, 40, 5):
            acc.add(rows[s:s + 5], maps=maps[s:s + 5], visibility=vis[s:s + 5],
                    weights=w[s:s + 5])
        a = (vis * w[:, None, None, None].float())  # [n,1,2,2]
        for t in range(6):
            m = rows == t
            ref = (maps[m] * a[m]).sum(0) / a[m].sum(0)
            ref = F.normalize(ref, dim=0)
            got = acc.maps()[t].float()
            torch.testing.assert_close(got, ref, atol=2e-3, rtol=0)
            ref_v = a[m].sum(0) / w[m].sum().float()
            torch.testing.assert_close(acc.visibility()[t], ref_v, atol=1e-5,
                                       rtol=0)
        self.assertEqual(acc.map_mean.dtype, torch.float16)

    def test_single_image_all_ones_is_identity(self):
        maps = F.normalize(torch.randn(3, 4, 2, 2), dim=1)
        acc = TemplateAccumulator(3, map_shape=(4, 2, 2),
                                  map_dtype=torch.float32)
        acc.add(torch.tensor([2, 0, 1]), maps=maps)
        torch.testing.assert_close(acc.maps()[[2, 0, 1]], maps)
        torch.testing.assert_close(acc.visibility(), torch.ones(3, 1, 2, 2))

    def test_merge_equals_single_stream(self):
        rows, media, feats, maps, vis = self._stream(seed=2)
        whole = TemplateAccumulator(6, 8, (4, 2, 2), torch.float32)
        whole.add(rows, feats, maps, vis)
        a = TemplateAccumulator(6, 8, (4, 2, 2), torch.float32)
        b = TemplateAccumulator(4, 8, (4, 2, 2), torch.float32)
        a.add(rows[:25], feats[:25], maps[:25], vis[:25])
        keep = rows[25:] < 4
        b.add(rows[25:][keep], feats[25:][keep], maps[25:][keep], vis[25:][keep])
        a.add(rows[25:][~keep], feats[25:][~keep], maps[25:][~keep],
              vis[25:][~keep])
        a.merge_(b)
        torch.testing.assert_close(a.maps(), whole.maps(), atol=1e-5, rtol=0)
        torch.testing.assert_close(a.embeddings(), whole.embeddings())
        torch.testing.assert_close(a.visibility(), whole.visibility())

    def test_grow(self):
        acc = TemplateAccumulator(1, emb_dim=2, map_shape=(2, 1, 1))
        acc.grow(4)
        acc.add(torch.tensor([3]), torch.ones(1, 2), torch.ones(1, 2, 1, 1))
        self.assertEqual(acc.maps().shape, (4, 2, 1, 1))
        self.assertEqual(acc.count.tolist(), [0, 0, 0, 1])


class TestExactTemplateAccumulator(unittest.TestCase):
    """Fixed-point sums: any order or split of the images pools the same bits."""

    def _batch(self, n=40, seed=0):
        g = torch.Generator().manual_seed(seed)
        rows = torch.randint(0, 5, (n, ), generator=g)
        feats = torch.randn(n, 6, generator=g) * 20
        maps = F.normalize(torch.randn(n, 4, 2, 2, generator=g), dim=1)
        vis = torch.rand(n, 1, 2, 2, generator=g)
        w = 1.0 / torch.randint(1, 4, (n, ), generator=g).double()
        return rows, feats, maps, vis, w

    def _acc(self, parts, batch):
        rows, feats, maps, vis, w = batch
        accs = []
        for idx in parts:
            acc = TemplateAccumulator(5, 6, (4, 2, 2), exact=True)
            for s in range(0, idx.numel(), 3):
                i = idx[s:s + 3]
                acc.add(rows[i], feats[i], maps[i], vis[i], w[i])
            accs.append(acc)
        for other in accs[1:]:
            accs[0].merge_(other)
        return accs[0]

    def test_order_and_split_do_not_change_a_bit(self):
        batch = self._batch()
        n = batch[0].numel()
        ref = self._acc([torch.arange(n)], batch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
        for parts in ([perm], [torch.arange(0, n, 2), torch.arange(1, n, 2)],
                      [perm[:7], perm[7:20], perm[20:]]):
            got = self._acc(parts, batch)
            self.assertTrue(torch.equal(got.embeddings(), ref.embeddings()))
            self.assertTrue(torch.equal(got.maps(), ref.maps()))
            self.assertTrue(torch.equal(got.visibility(), ref.visibility()))
            for a, b in zip(got.sum_tensors(), ref.sum_tensors()):
                self.assertTrue(torch.equal(a, b))

    def test_float_sums_do_depend_on_order(self):
        # Why the exact storage exists: the running-mean storage is not
        # order-independent (this would pass trivially if it were).
        rows, feats, maps, vis, w = self._batch(n=400, seed=4)
        outs = []
        for idx in (torch.arange(400), torch.arange(399, -1, -1)):
            acc = TemplateAccumulator(5, 6, (4, 2, 2))
            for s in range(0, 400, 3):
                i = idx[s:s + 3]
                acc.add(rows[i], feats[i], maps[i], vis[i], w[i])
            outs.append(acc.maps())
        self.assertFalse(torch.equal(outs[0], outs[1]))

    def test_matches_running_mean_storage(self):
        batch = self._batch(seed=2)
        rows, feats, maps, vis, w = batch
        exact = self._acc([torch.arange(rows.numel())], batch)
        approx = TemplateAccumulator(5, 6, (4, 2, 2), map_dtype=torch.float32)
        approx.add(rows, feats, maps, vis, w)
        torch.testing.assert_close(exact.embeddings(), approx.embeddings())
        torch.testing.assert_close(exact.maps().float(), approx.maps(),
                                   atol=2e-3, rtol=0)
        torch.testing.assert_close(exact.visibility(), approx.visibility())

    def test_refuses_unnormalised_maps_and_mixed_merge(self):
        acc = TemplateAccumulator(1, None, (2, 1, 1), exact=True)
        with self.assertRaises(ConfigError):
            acc.add(torch.tensor([0]), maps=torch.full((1, 2, 1, 1), 3.0))
        with self.assertRaises(ConfigError):
            acc.merge_(TemplateAccumulator(1, None, (2, 1, 1)))
        with self.assertRaises(ConfigError):
            TemplateAccumulator(1, 2).sum_tensors()

    def test_nonfinite_images_are_counted_and_pooled_as_zeros(self):
        for exact in (True, False):
            acc = TemplateAccumulator(3, 2, (2, 1, 1), exact=exact)
            feats = torch.tensor([[1., 0], [float('nan'), 0], [0, 1]])
            maps = F.normalize(torch.ones(3, 2, 1, 1), dim=1)
            maps[2, 0] = float('inf')
            acc.add(torch.tensor([0, 0, 2]), feats, maps)
            self.assertEqual(acc.nonfinite_rows(),
                             {'embedding': 1, 'feature_map': 1})
            self.assertTrue(torch.isfinite(acc.embeddings()).all())
            self.assertTrue(torch.isfinite(acc.maps().float()).all())
            torch.testing.assert_close(acc.embeddings()[0], torch.tensor([1., 0]))


class TestVisibilityPooling(unittest.TestCase):
    """``pooling='visibility'``: clean images are not diluted by occluded ones."""

    def _pair(self):
        # Two images of one template (separate media), 3 channels on a 1x2 grid.
        maps = F.normalize(torch.tensor([[[[1., 0.]], [[0., 1.]], [[0., 0.]]],
                                         [[[0., 0.]], [[1., 0.]], [[0., 1.]]]]),
                           dim=1)
        feats = torch.tensor([[4., 0.], [0., 4.]])
        return maps, feats

    def test_clean_image_takes_the_occluded_cell(self):
        maps, feats = self._pair()
        # Image 1 hides cell 0 completely and sees cell 1: mean visibility 0.5.
        vis = torch.tensor([[[[1., 1.]]], [[[0., 1.]]]])
        got = {}
        for pooling in ('mean', 'visibility'):
            acc = TemplateAccumulator(1, 2, (3, 1, 2), torch.float32,
                                      exact=True, pooling=pooling)
            acc.add(torch.tensor([0, 0]), feats, maps, vis)
            got[pooling] = acc
        vp = got['visibility']
        # Cell 0 is image 0's, up to the floor's 1e-4 share of image 1.
        torch.testing.assert_close(vp.maps()[0, :, 0, 0], maps[0, :, 0, 0],
                                   atol=2e-4, rtol=0)
        # Cell 1, seen by both: the plain mean, normalised.
        ref = F.normalize(maps[0, :, 0, 1] + maps[1, :, 0, 1], dim=0)
        torch.testing.assert_close(vp.maps()[0, :, 0, 1], ref, atol=1e-6,
                                   rtol=0)
        # Template visibility: the pooled cell 0 is the clean image's (1, not
        # the 'mean' rule's 0.5); 1 / (1 + 1e-4) with the floor.
        torch.testing.assert_close(vp.visibility()[0, 0, 0],
                                   torch.tensor([1 / (1 + 1e-4), 1.]))
        torch.testing.assert_close(got['mean'].visibility()[0, 0, 0],
                                   torch.tensor([0.5, 1.]))
        # Embeddings: weights 1 and 0.5 -> (4, 2) / |.|; the mean rule (4, 4).
        torch.testing.assert_close(vp.embeddings()[0],
                                   torch.tensor([2., 1.]) / 5**0.5)
        torch.testing.assert_close(got['mean'].embeddings()[0],
                                   torch.tensor([1., 1.]) / 2**0.5)

    def test_all_ones_visibility_is_the_mean_rule_bit_for_bit(self):
        g = torch.Generator().manual_seed(3)
        rows = torch.randint(0, 4, (30, ), generator=g)
        feats = torch.randn(30, 5, generator=g) * 10
        maps = F.normalize(torch.randn(30, 4, 2, 2, generator=g), dim=1)
        w = 1.0 / torch.randint(1, 4, (30, ), generator=g).double()
        for exact in (True, False):
            accs = []
            for pooling in ('mean', 'visibility'):
                acc = TemplateAccumulator(4, 5, (4, 2, 2), exact=exact,
                                          pooling=pooling)
                for s in range(0, 30, 7):
                    acc.add(rows[s:s + 7], feats[s:s + 7], maps[s:s + 7],
                            torch.ones(len(rows[s:s + 7]), 1, 2, 2),
                            w[s:s + 7])
                accs.append(acc)
            mean, vis = accs
            self.assertTrue(torch.equal(mean.embeddings(), vis.embeddings()))
            self.assertTrue(torch.equal(mean.maps(), vis.maps()))
            self.assertTrue(torch.equal(vis.visibility(),
                                        torch.ones(4, 1, 2, 2)))
            if exact:
                self.assertTrue(torch.equal(mean.visibility(),
                                            vis.visibility()))
            else:
                # The running storage's 'mean' rule divides an fp32 sum of
                # fp32 weights by their fp64 sum: 1 up to fp32 rounding.
                torch.testing.assert_close(mean.visibility(), vis.visibility())

    def test_cells_no_image_sees_fall_back_to_the_plain_mean(self):
        maps, feats = self._pair()
        vis = torch.tensor([[[[0., 1.]]], [[[0., 0.]]]])  # nobody sees cell 0
        acc = TemplateAccumulator(1, 2, (3, 1, 2), torch.float32, exact=True,
                                  pooling='visibility')
        # Media weights 1 and 0.5: the fallback keeps the protocol's weights.
        acc.add(torch.tensor([0, 0]), feats, maps, vis,
                torch.tensor([1.0, 0.5], dtype=torch.float64))
        ref = F.normalize(maps[0, :, 0, 0] + 0.5 * maps[1, :, 0, 0], dim=0)
        torch.testing.assert_close(acc.maps()[0, :, 0, 0], ref, atol=1e-6,
                                   rtol=0)
        self.assertEqual(float(acc.visibility()[0, 0, 0, 0]), 0.0)
        # Image 1 is fully occluded: the floor keeps it (weight 0.5 x 1e-4)
        # beside image 0 (1 x 0.5), so the embedding is (4 * 0.5, 4 * 5e-5).
        torch.testing.assert_close(acc.embeddings()[0],
                                   F.normalize(torch.tensor([0.5, 5e-5]),
                                               dim=0))
        # Every image fully occluded: the plain mean embedding.
        acc = TemplateAccumulator(1, 2, None, exact=True, pooling='visibility')
        acc.add(torch.tensor([0, 0]), feats, visibility=torch.zeros(2, 1, 1, 2))
        torch.testing.assert_close(acc.embeddings()[0],
                                   torch.tensor([1., 1.]) / 2**0.5)

    def test_order_and_split_do_not_change_a_bit(self):
        g = torch.Generator().manual_seed(5)
        n = 36
        rows = torch.randint(0, 5, (n, ), generator=g)
        feats = torch.randn(n, 6, generator=g) * 20
        maps = F.normalize(torch.randn(n, 4, 2, 2, generator=g), dim=1)
        vis = torch.rand(n, 1, 2, 2, generator=g)
        vis[::4] = 0.0  # fully occluded images
        w = 1.0 / torch.randint(1, 4, (n, ), generator=g).double()

        def pooled(parts):
            accs = []
            for idx in parts:
                acc = TemplateAccumulator(5, 6, (4, 2, 2), exact=True,
                                          pooling='visibility')
                for s in range(0, idx.numel(), 5):
                    i = idx[s:s + 5]
                    acc.add(rows[i], feats[i], maps[i], vis[i], w[i])
                accs.append(acc)
            for other in accs[1:]:
                accs[0].merge_(other)
            return accs[0]

        ref = pooled([torch.arange(n)])
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
        for parts in ([perm], [perm[:5], perm[5:19], perm[19:]]):
            got = pooled(parts)
            for a, b in zip(got.sum_tensors(), ref.sum_tensors()):
                self.assertTrue(torch.equal(a, b))
            self.assertTrue(torch.equal(got.embeddings(), ref.embeddings()))
            self.assertTrue(torch.equal(got.maps(), ref.maps()))
            self.assertTrue(torch.equal(got.visibility(), ref.visibility()))
        self.assertEqual(len(ref.sum_tensors()), 8)  # vis_num travels too

    def test_nonfinite_visibility_spoils_the_embedding_too(self):
        feats = torch.tensor([[1., 0], [0, 1]])
        maps = F.normalize(torch.ones(2, 2, 1, 1), dim=1)
        vis = torch.tensor([[[[float('nan')]]], [[[1.]]]])
        for pooling, expected in (('mean', {'feature_map': 1}),
                                  ('visibility', {'embedding': 1,
                                                  'feature_map': 1})):
            acc = TemplateAccumulator(1, 2, (2, 1, 1), exact=True,
                                      pooling=pooling)
            acc.add(torch.tensor([0, 0]), feats, maps, vis)
            self.assertEqual(acc.nonfinite_rows(), expected)
            self.assertTrue(torch.isfinite(acc.embeddings()).all())
            self.assertTrue(torch.isfinite(acc.visibility()).all())

    def test_bad_rules(self):
        for bad in ('max', (), ('mean', 'mean'), ('mean', 'visibility')):
            with self.assertRaises(ConfigError):
                TemplateAccumulator(1, 2, pooling=bad)
        self.assertEqual(check_pooling(['mean', 'visibility']),
                         ('mean', 'visibility'))
        with self.assertRaisesRegex(ConfigError, 'pooling'):
            TemplateAccumulator(1, 2).merge_(
                TemplateAccumulator(1, 2, pooling='visibility'))
