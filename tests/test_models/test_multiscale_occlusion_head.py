"""Tests of MultiScaleOcclusionHead and PixelVisibilityLoss."""
import math
import unittest

import torch
import torch.nn.functional as F

from oaml_mm.errors import ConfigError
from oaml_mm.models.losses import PixelVisibilityLoss
from oaml_mm.models.necks import MultiScaleOcclusionHead
from oaml_mm.registry import MODELS


def stage_maps(batch=2, widths=(8, 16, 32), sides=(28, 14, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, s, s, generator=g)
            for c, s in zip(widths, sides)]


def head(**kw):
    torch.manual_seed(0)
    cfg = dict(in_channels=(8, 16, 32), channels=4, out_size=28)
    cfg.update(kw)
    return MultiScaleOcclusionHead(**cfg)


class TestMultiScaleOcclusionHead(unittest.TestCase):

    def test_shapes_and_pooling_to_the_grid(self):
        neck = head().eval()
        feats = stage_maps()
        logits = neck.forward_logits(feats)
        self.assertEqual(tuple(logits.shape), (2, 1, 28, 28))
        # The grid comes from the caller: 7x7 by default (last stage), 14x14 asked.
        vis7, vis14 = neck(feats), neck(feats, grid_size=14)
        self.assertEqual(tuple(vis7.shape), (2, 1, 7, 7))
        self.assertEqual(tuple(vis14.shape), (2, 1, 14, 14))
        prob = torch.sigmoid(logits)
        # Area average: each 7x7 cell is the mean of its 4x4 block of pixels.
        torch.testing.assert_close(vis7, F.avg_pool2d(prob, 4))
        torch.testing.assert_close(vis7[0, 0, 2, 5],
                                   prob[0, 0, 8:12, 20:24].mean())
        torch.testing.assert_close(vis14, F.avg_pool2d(prob, 2))
        self.assertTrue(bool(((vis7 >= 0) & (vis7 <= 1)).all()))
        fine = head(out_size=56).eval()
        self.assertEqual(tuple(fine.forward_logits(feats).shape), (2, 1, 56, 56))
        self.assertEqual(fine.target_size, 56)
        self.assertEqual(MultiScaleOcclusionHead.reads, 'stages')

    def test_loss_one_forward_pixel_targets(self):
        neck = head()
        a, b = stage_maps(2, seed=1), stage_maps(3, seed=2)
        t = torch.ones(3, 1, 112, 112)
        t[:, :, 56:] = 0.0  # lower half covered, at the pixel level
        preds, losses = neck.loss([a, b], [None, t], grid_size=7)
        self.assertEqual([tuple(p.shape) for p in preds],
                         [(2, 1, 7, 7), (3, 1, 7, 7)])
        self.assertFalse(preds[0].requires_grad)
        # The loss scores only the labelled batch, its masks area-averaged to 28x28.
        logits = neck.forward_logits([torch.cat([x, y]) for x, y in zip(a, b)])
        ref = neck.loss_module(logits[2:], F.avg_pool2d(t, 4))
        torch.testing.assert_close(losses['loss'], ref)
        losses['loss'].backward()
        self.assertTrue(all(p.grad is not None for p in neck.parameters()))
        self.assertEqual(neck.loss([a], [None])[1], {})

    def test_learns_a_pixel_mask(self):
        neck = head()
        feats = stage_maps(4, seed=3)
        target = torch.ones(4, 1, 28, 28)
        target[:2, :, 14:] = 0.0
        opt = torch.optim.Adam(neck.parameters(), lr=0.05)
        first = None
        for _ in range(30):
            opt.zero_grad()
            loss = neck.loss([feats], [target])[1]['loss']
            first = loss.item() if first is None else first
            loss.backward()
            opt.step()
        self.assertLess(loss.item(), 0.5 * first)

    def test_config_errors(self):
        for kw in (dict(stages=(4, 2, 3)), dict(stages=(2, 5)),
                   dict(in_channels=(8, 16)), dict(out_size=20),
                   dict(out_size=14), dict(channels=0)):
            with self.assertRaises(ConfigError, msg=str(kw)):
                head(**kw)
        with self.assertRaises(ConfigError):
            head()(stage_maps(widths=(8, 16, 31)))
        self.assertIsInstance(
            MODELS.build(dict(type='MultiScaleOcclusionHead')),
            MultiScaleOcclusionHead)


class TestPixelVisibilityLoss(unittest.TestCase):

    def test_numbers(self):
        logits = torch.zeros(1, 1, 2, 2)
        target = torch.tensor([[[[1., 1.], [0., 0.]]]])
        bce = PixelVisibilityLoss(bce_weight=1.0, dice_weight=0.0)
        self.assertAlmostEqual(float(bce(logits, target)), math.log(2), 6)
        # Occluded part: predicted 0.5 everywhere, true on 2 pixels:
        # dice = (2 * 1 + 1) / (2 + 2 + 1) = 0.6.
        dice = PixelVisibilityLoss(bce_weight=0.0, dice_weight=1.0)
        self.assertAlmostEqual(float(dice(logits, target)), 0.4, 6)
        both = PixelVisibilityLoss(loss_weight=2.0)
        self.assertAlmostEqual(float(both(logits, target)),
                               2 * (math.log(2) + 0.4), 5)
        # A clean face predicted clean: no Dice loss.
        clean = dice(torch.full((1, 1, 2, 2), 20.0), torch.ones(1, 1, 2, 2))
        self.assertLess(float(clean), 1e-6)

    def test_batch_dice(self):
        # One occluded image (2 of 4 pixels), one clean image, all predicted
        # 0.5: per image, the clean one scores 1 - 1 / (2 + 1); over the batch,
        # 1 - (2 * 1 + 1) / (8 * 0.5 + 2 + 1) = 4 / 7.
        logits = torch.zeros(2, 1, 2, 2)
        target = torch.tensor([[[[1., 1.], [0., 0.]]], [[[1., 1.], [1., 1.]]]])
        image = PixelVisibilityLoss(bce_weight=0.0)
        batch = PixelVisibilityLoss(bce_weight=0.0, dice_reduction='batch')
        self.assertAlmostEqual(float(image(logits, target)),
                               (0.4 + 2 / 3) / 2, 6)
        self.assertAlmostEqual(float(batch(logits, target)), 4 / 7, 6)

    def test_errors(self):
        for kw in (dict(bce_weight=-1.0), dict(bce_weight=0.0, dice_weight=0.0),
                   dict(smooth=0.0), dict(dice_reduction='pixel')):
            with self.assertRaises(ConfigError, msg=str(kw)):
                PixelVisibilityLoss(**kw)
        with self.assertRaises(ConfigError):
            PixelVisibilityLoss()(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 4, 4))


if __name__ == '__main__':
    unittest.main()
