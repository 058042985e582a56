"""Tests of the QAConv losses, the occlusion loss and OcclusionHead."""
import unittest

import torch
import torch.nn.functional as F

from oaml_mm.errors import ConfigError
from oaml_mm.models.functional import hardest_pairs, resize_visibility
from oaml_mm.models.losses import (BatchHardTripletLoss, OcclusionMSELoss,
                                   PairwiseMatchingLoss)
from oaml_mm.registry import MODELS

SCORES = torch.tensor([[9., 5., 1., 0.], [5., 9., 2., 6.], [1., 2., 9., 3.],
                       [0., 6., 3., 9.]])
LABELS = torch.tensor([0, 0, 1, 1])


class TestPairMining(unittest.TestCase):

    def test_hardest_pairs(self):
        min_pos, max_neg, valid = hardest_pairs(SCORES, LABELS)
        torch.testing.assert_close(min_pos, torch.tensor([5., 5., 3., 3.]))
        torch.testing.assert_close(max_neg, torch.tensor([1., 6., 2., 6.]))
        self.assertTrue(bool(valid.all()))
        _, _, valid = hardest_pairs(SCORES, torch.tensor([0, 1, 2, 2]))
        self.assertEqual(valid.tolist(), [False, False, True, True])


class TestLosses(unittest.TestCase):

    def test_pairwise(self):
        loss, acc = PairwiseMatchingLoss(loss_weight=2.0)(SCORES, LABELS)
        target = (LABELS[:, None] == LABELS[None]).float()
        ref = F.binary_cross_entropy_with_logits(
            SCORES, target, reduction='none').sum(1).mean()
        torch.testing.assert_close(loss, 2 * ref)
        self.assertAlmostEqual(float(acc), 0.5)  # rows 0 and 2 rank right

    def test_triplet(self):
        loss, acc = BatchHardTripletLoss(margin=2.0)(SCORES, LABELS)
        gaps = torch.tensor([4., -1., 1., -3.])
        torch.testing.assert_close(loss, torch.relu(2 - gaps).mean())
        self.assertAlmostEqual(float(acc), 0.5)
        loss, acc = BatchHardTripletLoss()(SCORES, torch.arange(4))
        self.assertEqual(float(loss), 0.0)  # no positives: nothing to rank

    def test_occlusion_mse(self):
        pred = torch.full((2, 1, 7, 7), 0.5)
        mask = torch.ones(2, 1, 112, 112)
        mask[:, :, 56:] = 0
        small = resize_visibility(mask, 7)
        self.assertEqual(tuple(small.shape), (2, 1, 7, 7))
        # Row 56 splits cell row 3: the cell is half visible.
        torch.testing.assert_close(small[0, 0, :, 0],
                                   torch.tensor([1., 1., 1., .5, 0., 0., 0.]))
        self.assertAlmostEqual(float(OcclusionMSELoss()(pred, mask)),
                               6 * 0.25 / 7, 5)
        with self.assertRaises(ConfigError):
            resize_visibility(torch.ones(2, 3, 7, 7), 7)

    def test_registered(self):
        for name in ('PairwiseMatchingLoss', 'BatchHardTripletLoss',
                     'OcclusionMSELoss'):
            MODELS.build(dict(type=name))


class TestOcclusionHead(unittest.TestCase):

    def test_shape_range_params(self):
        head = MODELS.build(dict(type='OcclusionHead', in_channels=512))
        n = sum(p.numel() for p in head.parameters())
        self.assertEqual(n, 512 * 128 * 9 + 2 * 128 + 128 + 1)  # 590,209
        small = MODELS.build(dict(type='OcclusionHead', in_channels=16,
                                  hidden_channels=8))
        out = small(torch.randn(3, 16, 7, 7))
        self.assertEqual(tuple(out.shape), (3, 1, 7, 7))
        self.assertTrue(bool(((out > 0) & (out < 1)).all()))
        self.assertIsNone(small.conv.bias)
        with self.assertRaises(ConfigError):
            small(torch.randn(3, 8, 7, 7))

    def test_loss_scores_labelled_batches_with_one_forward(self):
        torch.manual_seed(0)
        head = MODELS.build(dict(type='OcclusionHead', in_channels=16,
                                 hidden_channels=8)).train()
        a, b = torch.randn(4, 16, 7, 7), torch.randn(2, 16, 7, 7) + 3
        gt = torch.zeros(2, 1, 112, 112)
        preds, losses = head.loss([a, b], [None, gt])
        self.assertEqual([tuple(p.shape) for p in preds],
                         [(4, 1, 7, 7), (2, 1, 7, 7)])
        self.assertFalse(preds[0].requires_grad)
        # One forward over the union: BatchNorm statistics of both batches.
        head.zero_grad()
        joint = head(torch.cat([a, b]))
        torch.testing.assert_close(torch.cat(preds), joint.detach())
        # The loss covers the labelled batch only (target all occluded = 0).
        expected = (joint[4:] ** 2).mean()
        torch.testing.assert_close(losses['loss'], expected)
        losses['loss'].backward()
        self.assertGreater(float(head.out.weight.grad.abs().sum()), 0)
        _, none = head.loss([a], [None])
        self.assertEqual(none, {})


if __name__ == '__main__':
    unittest.main()
