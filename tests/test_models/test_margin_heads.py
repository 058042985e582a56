"""Tests of the margin function and the AdaFace/ArcFace/CosFace heads."""
import math
import unittest

import torch

from oaml_mm.models.functional import margin_logits
from oaml_mm.models.heads import AdaFaceHead, ArcFaceHead, CosFaceHead
from oaml_mm.registry import MODELS


def make(cls, **kw):
    torch.manual_seed(0)
    return cls(in_channels=8, num_classes=5, **kw)


class TestMarginLogits(unittest.TestCase):

    def test_formula(self):
        cos = torch.tensor([[0.5, 0.2], [0.1, 0.3]])
        y = torch.tensor([0, 1])
        out = margin_logits(cos, y, angular=0.3, additive=0.1, scale=2.0)
        t0 = math.cos(math.acos(0.5) + 0.3) - 0.1
        t1 = math.cos(math.acos(0.3) + 0.3) - 0.1
        torch.testing.assert_close(
            out, 2 * torch.tensor([[t0, 0.2], [0.1, t1]]))

    def test_minus_one_marks_a_target_on_another_shard(self):
        cos = torch.tensor([[0.5, 0.2], [0.1, 0.3]])
        out = margin_logits(cos, torch.tensor([-1, 1]), angular=0.3,
                            additive=0.1, scale=2.0)
        t1 = math.cos(math.acos(0.3) + 0.3) - 0.1
        torch.testing.assert_close(out, 2 * torch.tensor([[0.5, 0.2],
                                                          [0.1, t1]]))
        empty = margin_logits(torch.zeros(2, 0), torch.tensor([-1, -1]))
        self.assertEqual(tuple(empty.shape), (2, 0))

    def test_finite_gradient_at_cos_plus_minus_one(self):
        for value in (1.0, -1.0):
            cos = torch.full((2, 3), value, requires_grad=True)
            out = margin_logits(cos, torch.tensor([0, 2]), angular=0.5)
            out.sum().backward()
            self.assertTrue(torch.isfinite(out).all())
            self.assertTrue(torch.isfinite(cos.grad).all())


class TestMarginHeads(unittest.TestCase):

    def test_build_and_kernel(self):
        for name in ('AdaFaceHead', 'ArcFaceHead', 'CosFaceHead'):
            head = MODELS.build(dict(type=name, in_channels=8, num_classes=5))
            self.assertEqual(tuple(head.kernel.shape), (8, 5))
            torch.testing.assert_close(head.kernel.norm(dim=0), torch.ones(5))

    def test_adaface_ms_minus_one_is_arcface_and_zero_is_cosface(self):
        emb = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
        y = torch.tensor([0, 1, 2, 3])
        ada = make(AdaFaceHead, m=0.4, h=10.0).eval()
        arc = make(ArcFaceHead, m=0.4).eval()
        cosf = make(CosFaceHead, m=0.4).eval()
        # norm far below batch_mean with h=10: ms clips to -1.
        low = torch.full((4, 1), 0.001)
        torch.testing.assert_close(ada.margin_scaler(low), -torch.ones(4, 1))
        torch.testing.assert_close(ada(emb, low, y), arc(emb, low, y))
        # norm == batch_mean: ms = 0.
        mid = torch.full((4, 1), 20.0)
        torch.testing.assert_close(ada.margin_scaler(mid), torch.zeros(4, 1))
        torch.testing.assert_close(ada(emb, mid, y), cosf(emb, mid, y),
                                   atol=1e-4, rtol=1e-5)
        # And the margins really differ from no margin.
        plain = emb @ torch.nn.functional.normalize(arc.kernel, dim=0) * 64
        self.assertLess(arc(emb, low, y)[0, 0].item(), plain[0, 0].item())

    def test_ema_updates_only_in_training(self):
        head = make(AdaFaceHead, t_alpha=0.5)
        emb, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 3])
        norms = torch.tensor([[10.], [12.], [14.], [16.]])
        head.eval()
        head(emb, norms, y)
        self.assertEqual(float(head.batch_mean), 20.0)
        self.assertEqual(float(head.batch_std), 100.0)
        head.train()
        head(emb, norms, y)
        self.assertAlmostEqual(float(head.batch_mean), 0.5 * 13 + 0.5 * 20, 4)
        self.assertAlmostEqual(float(head.batch_std),
                               0.5 * float(norms.std()) + 50, 4)

    def test_batch_of_one_is_finite(self):
        head = make(AdaFaceHead).train()
        out = head.loss(torch.randn(1, 8), torch.tensor([[15.0]]),
                        torch.tensor([3]))
        self.assertTrue(torch.isfinite(out['loss']))
        self.assertTrue(torch.isfinite(head.batch_std).all())

    def test_grad_finite_when_embedding_equals_centre(self):
        for cls in (AdaFaceHead, ArcFaceHead, CosFaceHead):
            head = make(cls)
            emb = head.kernel.detach().t()[:2].clone().requires_grad_(True)
            out = head.loss(emb, torch.full((2, 1), 25.0), torch.tensor([0, 1]))
            out['loss'].backward()
            self.assertTrue(torch.isfinite(emb.grad).all(), cls.__name__)
            self.assertTrue(torch.isfinite(head.kernel.grad).all())

    def test_bf16_autocast_cpu(self):
        for cls in (AdaFaceHead, ArcFaceHead, CosFaceHead):
            head = make(cls).train()
            emb = torch.randn(4, 8, requires_grad=True)
            with torch.autocast('cpu', dtype=torch.bfloat16):
                out = head.loss(emb.bfloat16(), torch.full((4, 1), 20.0),
                                torch.tensor([0, 1, 2, 3]))
            self.assertEqual(out['loss'].dtype, torch.float32)
            out['loss'].backward()
            self.assertTrue(torch.isfinite(emb.grad).all())

    def test_margin_scale(self):
        head = make(CosFaceHead, m=0.4).eval()
        emb, y = torch.randn(2, 8), torch.tensor([0, 1])
        head.set_margin_scale(0.0)
        no_margin = head(emb, torch.ones(2, 1), y)
        torch.testing.assert_close(no_margin, 64 * head.cosine(emb).clamp(
            -1 + 1e-3, 1 - 1e-3))
        head.set_margin_scale(0.5)
        half = head(emb, torch.ones(2, 1), y)
        torch.testing.assert_close(no_margin[0, 0] - half[0, 0],
                                   torch.tensor(64 * 0.2))

    def test_loss_learns_and_label_check(self):
        head = make(ArcFaceHead, m=0.2, s=16.0)
        emb = torch.randn(10, 8)
        y = torch.arange(10) % 5
        opt = torch.optim.SGD(head.parameters(), lr=1.0)
        first = None
        for _ in range(20):
            out = head.loss(emb, torch.ones(10, 1), y)
            first = first if first is not None else float(out['loss'])
            opt.zero_grad()
            out['loss'].backward()
            opt.step()
        self.assertLess(float(out['loss']), first)
        self.assertGreater(float(out['accuracy']), 0.5)
        with self.assertRaises(ValueError):
            head.loss(emb, torch.ones(10, 1), torch.full((10, ), 7))


if __name__ == '__main__':
    unittest.main()
