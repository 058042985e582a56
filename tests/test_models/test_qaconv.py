"""Tests of QAConv matching (functional) and QAConvHead."""
import unittest

import torch
import torch.nn as nn

from oaml_mm.errors import ConfigError
from oaml_mm.models.functional import (calibrate_visibility, normalize_maps,
                                       qaconv_match, qaconv_match_pairs,
                                       resize_visibility)
from oaml_mm.models.heads import QAConvHead
from oaml_mm.registry import MODELS


def modules(train=False, seed=0):
    torch.manual_seed(seed)
    bn, fc, lbn = nn.BatchNorm1d(1), nn.Linear(49, 1), nn.BatchNorm1d(1)
    # Non-trivial running statistics so that eval mode is not the identity.
    bn.running_mean.fill_(0.3)
    bn.running_var.fill_(0.04)
    lbn.running_mean.fill_(1.0)
    lbn.running_var.fill_(2.0)
    for m in (bn, fc, lbn):
        m.train(train)
    return bn, fc, lbn


def maps(n, c=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return normalize_maps(torch.randn(n, c, 7, 7, generator=g))


def reference(p, g, bn, fc, lbn, vp=None, vg=None):
    """Straight transcription of the v2.1 forward (+ seed weighting)."""
    P, G = p.shape[0], g.shape[0]
    s = torch.einsum('pcr,gct->pgrt', p.flatten(2), g.flatten(2))
    if vp is not None:
        s = s * vp.reshape(P, 1, 49, 1) * vg.reshape(1, G, 1, 49)
    x = torch.cat((s.max(dim=3)[0], s.max(dim=2)[0]), dim=-1).view(-1, 1, 49)
    x = fc(bn(x).view(-1, 49)).view(-1, 2).sum(dim=-1, keepdim=True)
    return lbn(x).view(P, G)


class TestQAConvFunctional(unittest.TestCase):

    def test_matches_reference_eval_and_train(self):
        p, g = maps(4), maps(3, seed=2)
        for train in (False, True):
            mods = modules(train)
            ref = reference(p, g, *modules(train))
            torch.testing.assert_close(qaconv_match(p, g, *mods), ref)

    def test_chunked_equals_unchunked(self):
        p, g = maps(5), maps(7, seed=2)
        vp, vg = torch.rand(5, 1, 7, 7), torch.rand(7, 1, 7, 7)
        for mode in ('seed', 'gate', 'none'):
            for train in (False, True):
                full = qaconv_match(p, g, *modules(train), vp, vg, mode)
                small = qaconv_match(p, g, *modules(train), vp, vg, mode,
                                     max_chunk_elems=2 * 49 * 49)
                torch.testing.assert_close(small, full, msg=f'{mode} {train}')

    def test_chunk_budget_is_respected(self):
        # The correlation of a chunk is one torch.mm (functional/qaconv.py).
        seen = []
        orig = torch.mm

        def spy(*ops, **kw):
            out = orig(*ops, **kw)
            seen.append(out.numel())
            return out

        torch.mm = spy
        try:
            qaconv_match(maps(6), maps(5), *modules(), max_chunk_elems=3 * 49 * 49)
        finally:
            torch.mm = orig
        self.assertLessEqual(max(seen), 3 * 49 * 49)
        self.assertGreater(len(seen), 1)

    def test_all_ones_visibility_is_exactly_unweighted(self):
        p, g = maps(3), maps(4, seed=2)
        ones_p, ones_g = torch.ones(3, 1, 7, 7), torch.ones(4, 1, 7, 7)
        plain = qaconv_match(p, g, *modules())
        for mode in ('seed', 'gate'):
            self.assertTrue(torch.equal(
                qaconv_match(p, g, *modules(), ones_p, ones_g, mode), plain))

    def test_zero_visibility_region_cannot_change_score(self):
        p, g = maps(2), maps(3, seed=2)
        vp, vg = torch.rand(2, 1, 7, 7), torch.rand(3, 1, 7, 7)
        vp[:, :, 2:4, 1:5] = 0
        vg[:, :, 5:, :] = 0
        p2, g2 = p.clone(), g.clone()
        p2[:, :, 2:4, 1:5] = normalize_maps(torch.randn(2, 6, 2, 4))
        g2[:, :, 5:, :] = normalize_maps(torch.randn(3, 6, 2, 7))
        for mode in ('seed', 'gate'):
            a = qaconv_match(p, g, *modules(), vp, vg, mode)
            b = qaconv_match(p2, g2, *modules(), vp, vg, mode)
            torch.testing.assert_close(a, b, msg=mode)
            # ...while the visible part does change it.
            c = qaconv_match(maps(2, seed=9), g, *modules(), vp, vg, mode)
            self.assertFalse(torch.allclose(a, c))

    def test_gate_is_symmetric(self):
        p, g = maps(3), maps(3, seed=2)
        vp, vg = torch.rand(3, 1, 7, 7), torch.rand(3, 1, 7, 7)
        a = qaconv_match(p, g, *modules(), vp, vg, 'gate')
        b = qaconv_match(g, p, *modules(), vg, vp, 'gate')
        torch.testing.assert_close(a, b.t())

    def test_pairs_equal_diagonal(self):
        a, b = maps(6), maps(6, seed=2)
        va, vb = torch.rand(6, 1, 7, 7), torch.rand(6, 1, 7, 7)
        for mode in ('seed', 'gate', 'none'):
            full = qaconv_match(a, b, *modules(), va, vb, mode)
            pairs = qaconv_match_pairs(a, b, *modules(), va, vb, mode,
                                       max_chunk_elems=2 * 49 * 49)
            torch.testing.assert_close(pairs, full.diagonal())
        # Training-mode BN statistics are those of the N pairs, chunked or not.
        t1 = qaconv_match_pairs(a, b, *modules(True), va, vb)
        t2 = qaconv_match_pairs(a, b, *modules(True), va, vb,
                                max_chunk_elems=49 * 49)
        torch.testing.assert_close(t1, t2)

    def test_half_precision(self):
        p, g = maps(3), maps(4, seed=2)
        full = qaconv_match(p, g, *modules())
        half = qaconv_match(p, g, *modules(), half=True)
        self.assertEqual(half.dtype, torch.float32)
        torch.testing.assert_close(half, full, atol=0.1, rtol=0.05)

    def test_bad_input(self):
        with self.assertRaises(ConfigError):
            qaconv_match(maps(2), maps(2), *modules(), vis_mode='bogus')
        with self.assertRaises(ConfigError):
            qaconv_match(maps(2), maps(2), *modules(),
                         probe_vis=torch.ones(2, 1, 5, 5))
        with self.assertRaises(ConfigError):
            qaconv_match(maps(2), maps(2, c=5), *modules())


class TestQAConvHead(unittest.TestCase):

    def build(self, **kw):
        torch.manual_seed(0)
        return MODELS.build(dict(type='QAConvHead', in_channels=6, **kw))

    def test_vis_mode_old_name_still_accepted(self):
        # 'multiply' was called 'seed'; configs and checkpoints' dumped configs
        # with the old name build the same head and give the same scores.
        new, old = self.build(vis_mode='multiply'), self.build(vis_mode='seed')
        self.assertEqual((new.vis_mode, old.vis_mode), ('multiply', 'multiply'))
        self.assertEqual(self.build().vis_mode, 'multiply')
        x = torch.randn(3, 6, 7, 7)
        v = torch.rand(3, 1, 7, 7)
        torch.testing.assert_close(new.eval().match(x, x, v, v),
                                   old.eval().match(x, x, v, v))
        with self.assertRaisesRegex(ConfigError, "'multiply', 'gate', 'none'"):
            self.build(vis_mode='product')

    def test_submodules_and_init(self):
        head = self.build()
        self.assertIsInstance(head.bn, nn.BatchNorm1d)
        self.assertIsInstance(head.logit_bn, nn.BatchNorm1d)
        torch.testing.assert_close(head.fc.weight, torch.full((1, 49), 1 / 49))

    def test_match_and_pairs(self):
        head = self.build().eval()
        x = torch.randn(4, 6, 7, 7)
        s = head.match(x, x[:2])
        self.assertEqual(tuple(s.shape), (4, 2))
        torch.testing.assert_close(head.match_pairs(x[:2], x[:2]),
                                   s[:2].diagonal())
        with self.assertRaises(ConfigError):
            head.match(torch.randn(2, 5, 7, 7), x)

    def test_losses_and_accuracy(self):
        head = self.build(losses=dict(
            pairwise=dict(type='PairwiseMatchingLoss'),
            triplet=dict(type='BatchHardTripletLoss', margin=16.0),
            memory=dict(type='ClassMemorySoftmaxTripletLoss', num_classes=3,
                        in_channels=6)))
        x = torch.randn(6, 6, 7, 7, requires_grad=True)
        y = torch.tensor([0, 0, 1, 1, 2, 2])
        out = head.loss(x, y, torch.rand(6, 1, 7, 7))
        for name in ('pairwise', 'triplet', 'memory'):
            self.assertTrue(torch.isfinite(out[f'loss_{name}']))
            self.assertTrue(0 <= float(out[f'acc_{name}']) <= 1)
        sum(v for k, v in out.items() if k.startswith('loss')).backward()
        self.assertTrue(torch.isfinite(x.grad).all())
        self.assertIsNotNone(head.fc.weight.grad)
        self.assertIsNotNone(head.losses['memory'].memory.grad)

    def test_class_memory_loss_takes_the_heads_grid(self):
        head = QAConvHead(in_channels=6, feat_size=4, losses=dict(
            memory=dict(type='ClassMemorySoftmaxTripletLoss', num_classes=3,
                        in_channels=6)))
        self.assertEqual(tuple(head.losses['memory'].memory.shape), (3, 6, 4, 4))
        out = head.loss(torch.randn(6, 6, 4, 4), torch.tensor([0, 0, 1, 1, 2, 2]))
        self.assertTrue(torch.isfinite(out['loss_memory']))

    def test_training_lowers_pairwise_loss(self):
        torch.manual_seed(0)
        head = self.build(losses=dict(pairwise=dict(
            type='PairwiseMatchingLoss')))
        x = torch.randn(8, 6, 7, 7, requires_grad=True)
        y = torch.arange(8) // 2
        opt = torch.optim.SGD([x] + list(head.parameters()), lr=0.5)
        losses = []
        for _ in range(15):
            out = head.loss(x, y)
            losses.append(out['loss_pairwise'].item())
            opt.zero_grad()
            out['loss_pairwise'].backward()
            opt.step()
        self.assertLess(losses[-1], 0.7 * losses[0])
        self.assertEqual(float(out['acc_pairwise']), 1.0)

    def test_bad_config(self):
        with self.assertRaises(ConfigError):
            QAConvHead(vis_mode='bogus')
        for bad in ((0.7, 0.3), (0.2, 1.5), (0.5, ), 'x'):
            with self.assertRaises(ConfigError, msg=str(bad)):
                QAConvHead(vis_range=bad)

    def test_vis_range_stretches_visibility_everywhere(self):
        torch.manual_seed(3)
        plain = self.build(vis_mode='gate').eval()
        stretched = self.build(vis_mode='gate', vis_range=(0.3, 0.7)).eval()
        x = torch.randn(4, 6, 7, 7)
        vis = torch.rand(4, 1, 7, 7)
        v2 = calibrate_visibility(vis, (0.3, 0.7))
        torch.testing.assert_close(stretched.match(x, x, vis, vis),
                                   plain.match(x, x, v2, v2))
        torch.testing.assert_close(
            stretched.match_pairs(x[:2], x[2:], vis[:2], vis[2:]),
            plain.match_pairs(x[:2], x[2:], v2[:2], v2[2:]))
        # A clean face predicted 0.8-visible everywhere matches as unweighted.
        high = torch.full((4, 1, 7, 7), 0.8)
        torch.testing.assert_close(stretched.match(x, x, high, high),
                                   plain.match(x, x))
        # Training matches with the maps as given.
        y = torch.tensor([0, 0, 1, 1])
        torch.testing.assert_close(
            stretched.train().loss(x, y, vis)['loss_pairwise'],
            plain.train().loss(x, y, vis)['loss_pairwise'])
        self.assertFalse(torch.allclose(
            plain.train().loss(x, y, vis)['loss_pairwise'],
            plain.train().loss(x, y, v2)['loss_pairwise']))

    def test_visibility_on_another_grid_is_resized(self):
        # QAConv on 14x14 maps (backbone map_stage=3) weighted by 7x7 true masks.
        head = self.build(vis_mode='gate', feat_size=14).eval()
        x = torch.randn(3, 6, 14, 14)
        vis7 = (torch.rand(3, 1, 7, 7) > 0.5).float()
        vis14 = vis7.repeat_interleave(2, 2).repeat_interleave(2, 3)
        torch.testing.assert_close(head.match(x, x, vis7, vis7),
                                   head.match(x, x, vis14, vis14))
        torch.testing.assert_close(head.match_pairs(x, x, vis7, vis7),
                                   head.match_pairs(x, x, vis14, vis14))
        self.assertFalse(torch.allclose(head.match(x, x, vis7, vis7),
                                        head.match(x, x)))


class TestResizeVisibility(unittest.TestCase):

    def test_up_is_nearest_down_is_area_average(self):
        v = torch.rand(2, 1, 7, 7)
        up = resize_visibility(v, 14)
        self.assertEqual(tuple(up.shape), (2, 1, 14, 14))
        torch.testing.assert_close(up[:, :, ::2, ::2], v)
        torch.testing.assert_close(up[:, :, 1::2, 1::2], v)
        # Averaging the copies back gives the original exactly.
        torch.testing.assert_close(resize_visibility(up, 7), v)
        fine = torch.rand(2, 14, 14)
        down = resize_visibility(fine, 7)
        self.assertEqual(tuple(down.shape), (2, 7, 7))
        torch.testing.assert_close(down[0, 0, 0], fine[0, :2, :2].mean())
        self.assertIs(resize_visibility(v, 7), v)
        self.assertIsNone(resize_visibility(None, 7))
        self.assertEqual(resize_visibility(v.half(), 14).dtype, torch.float16)
        with self.assertRaises(ValueError):
            resize_visibility(torch.rand(7, 7), 14)


class TestCalibrateVisibility(unittest.TestCase):

    def test_values(self):
        v = torch.tensor([0.0, 0.3, 0.5, 0.7, 0.95])
        torch.testing.assert_close(calibrate_visibility(v, (0.3, 0.7)),
                                   torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
        self.assertIs(calibrate_visibility(v, None), v)
        self.assertIsNone(calibrate_visibility(None, (0.3, 0.7)))


if __name__ == '__main__':
    unittest.main()
