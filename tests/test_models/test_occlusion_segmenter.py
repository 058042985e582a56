"""Tests of OcclusionSegmenter and VisibilitySegmentor (tiny widths, CPU)."""
import os.path as osp
import tempfile
import unittest

import torch
from mmpretrain.structures import DataSample

from oaml_mm.errors import ConfigError, DataFormatError
from oaml_mm.models.utils import fold_batchnorm
from oaml_mm.registry import MODELS

TINY = dict(type='OcclusionSegmenter', channels=(4, 8, 8, 8))


def build(**kw):
    torch.manual_seed(0)
    return MODELS.build({**TINY, **kw})


def samples(n, side=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        vis = (torch.rand(1, side, side, generator=g) > 0.5).float()
        sample = DataSample()
        sample.set_field(vis, 'gt_visibility')
        out.append(sample)
    return out


class TestOcclusionSegmenter(unittest.TestCase):

    def test_shapes_and_range(self):
        seg = build().eval()
        x = torch.randn(2, 3, 112, 112)
        self.assertEqual(tuple(seg.forward_logits(x).shape), (2, 1, 28, 28))
        for side in (7, 14, 28):
            vis = seg(x, out_size=side)
            self.assertEqual(tuple(vis.shape), (2, 1, side, side))
            self.assertTrue(bool((vis >= 0).all() and (vis <= 1).all()))
        # The grid is the area average of the 1/4-scale map.
        torch.testing.assert_close(
            seg(x, out_size=7), torch.nn.functional.avg_pool2d(seg(x), 4))

    def test_default_width_is_about_a_third_of_a_million(self):
        n = sum(p.numel() for p in MODELS.build(
            dict(type='OcclusionSegmenter')).parameters())
        self.assertTrue(300_000 < n < 400_000, n)

    def test_bad_input_and_config(self):
        seg = build()
        with self.assertRaisesRegex(ConfigError, 'multiples of 16'):
            seg(torch.randn(1, 3, 100, 100))
        with self.assertRaisesRegex(ConfigError, r'\[B, 3, H, W\]'):
            seg(torch.randn(1, 64, 112, 112))
        with self.assertRaisesRegex(ConfigError, 'four positive'):
            build(channels=(4, 8, 8))

    def test_loss_trains_every_parameter(self):
        seg = build().train()
        x = torch.randn(4, 3, 112, 112)
        gt = torch.zeros(4, 1, 112, 112)
        gt[..., 56:, :] = 1.0  # a pixel-level target, pooled to 28x28
        preds, losses = seg.loss([x[:2], x[2:]], [gt[:2], None], out_size=7)
        self.assertEqual([tuple(p.shape) for p in preds], [(2, 1, 7, 7)] * 2)
        self.assertFalse(preds[0].requires_grad)
        losses['loss'].backward()
        self.assertTrue(all(p.grad is not None and bool(p.grad.abs().sum() > 0)
                            for p in seg.parameters()))

    def test_loss_value_is_bce_at_quarter_scale_and_on_coarse_targets(self):
        seg = build().eval()
        x = torch.randn(2, 3, 112, 112)
        logits = seg.forward_logits(x)
        gt = torch.rand(2, 1, 28, 28)
        _, fine = seg.loss([x], [gt])
        torch.testing.assert_close(
            fine['loss'],
            torch.nn.functional.binary_cross_entropy_with_logits(logits, gt))
        coarse_gt = torch.rand(2, 1, 7, 7)
        _, coarse = seg.loss([x], [coarse_gt])
        p = torch.nn.functional.avg_pool2d(torch.sigmoid(logits), 4)
        torch.testing.assert_close(
            coarse['loss'],
            torch.nn.functional.binary_cross_entropy(p, coarse_gt))

    def test_frozen_gets_no_grad_and_stays_in_eval(self):
        seg = build(frozen=True)
        self.assertFalse(any(m.training for m in seg.modules()))
        seg.train()
        self.assertFalse(seg.training)
        self.assertFalse(any(m.training for m in seg.modules()))
        self.assertTrue(all(not p.requires_grad for p in seg.parameters()))
        x = torch.randn(2, 3, 112, 112, requires_grad=True)
        preds, losses = seg.loss([x], [torch.ones(2, 1, 28, 28)], out_size=7)
        self.assertEqual(losses, {})
        self.assertEqual(tuple(preds[0].shape), (2, 1, 7, 7))
        running = seg.stages[0][1].running_mean.clone()
        seg(torch.randn(2, 3, 112, 112) * 5)
        torch.testing.assert_close(seg.stages[0][1].running_mean, running)

    def test_batchnorm_folds(self):
        seg = build()
        seg.train()
        seg(torch.randn(4, 3, 112, 112) * 3 + 1)  # non-trivial running stats
        seg.eval()
        folded = fold_batchnorm(seg)
        self.assertFalse(any(isinstance(m, torch.nn.BatchNorm2d)
                             for m in folded.modules()))
        x = torch.randn(2, 3, 112, 112)
        torch.testing.assert_close(folded(x, 7), seg(x, 7), atol=1e-4,
                                   rtol=1e-4)


class TestVisibilitySegmentor(unittest.TestCase):

    def model(self):
        torch.manual_seed(0)
        return MODELS.build(dict(type='VisibilitySegmentor', segmenter=TINY))

    def test_train_step_lowers_loss(self):
        from mmengine.optim import OptimWrapper
        model = self.model()
        g = torch.Generator().manual_seed(0)
        data = dict(inputs=[torch.randint(0, 256, (3, 112, 112),
                                          dtype=torch.uint8, generator=g)
                            for _ in range(4)],
                    data_samples=samples(4))
        ow = OptimWrapper(torch.optim.Adam(model.parameters(), lr=1e-2))
        first = model.train_step(data, ow)['loss_vis'].item()
        for _ in range(10):
            last = model.train_step(data, ow)['loss_vis'].item()
        self.assertLess(last, first)
        out = model.val_step(data)
        self.assertEqual(tuple(out[0].visibility.shape), (1, 28, 28))

    def test_loss_without_masks_and_bad_segmenter(self):
        model = self.model()
        with self.assertRaisesRegex(DataFormatError, 'gt_visibility'):
            model(torch.randn(2, 3, 112, 112), [DataSample(), DataSample()],
                  mode='loss')
        with self.assertRaisesRegex(ConfigError, 'frozen'):
            MODELS.build(dict(type='VisibilitySegmentor',
                              segmenter={**TINY, 'frozen': True}))
        with self.assertRaisesRegex(ConfigError, 'does not read images'):
            MODELS.build(dict(type='VisibilitySegmentor', segmenter=dict(
                type='OcclusionHead', in_channels=8)))

    def test_checkpoint_loads_into_a_neck_by_config(self):
        model = self.model()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        with tempfile.TemporaryDirectory() as tmp:
            path = osp.join(tmp, 'seg.pth')
            torch.save(dict(state_dict=model.state_dict(), meta={}), path)
            neck = MODELS.build({**TINY, 'frozen': True, 'init_cfg': dict(
                type='Pretrained', checkpoint=path, prefix='segmenter.')})
            neck.init_weights()
        x = torch.randn(2, 3, 112, 112)
        model.eval()
        torch.testing.assert_close(neck(x), model(x))
        self.assertTrue(all(not p.requires_grad for p in neck.parameters()))


if __name__ == '__main__':
    unittest.main()
