"""fold_batchnorm: BatchNorms folded into convolutions / linear layers for inference."""
import copy
import unittest

import torch
import torch.nn as nn

from oaml_mm.models.utils import fold_batchnorm, inference_model
from oaml_mm.registry import MODELS


def _randomise_bn(model, seed=0):
    """Non-trivial running statistics and affine parameters in every BN."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return model


def _count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


class TestFoldBatchNorm(unittest.TestCase):

    def test_iresnet_same_outputs_fewer_bns(self):
        for channels_last in (False, True):
            torch.manual_seed(0)
            net = _randomise_bn(MODELS.build(dict(
                type='IResNet', depth=18, width_mult=0.125, embedding_size=16,
                channels_last=channels_last))).eval()
            before = copy.deepcopy(net.state_dict())
            folded = fold_batchnorm(net)
            x = torch.randn(3, 3, 112, 112, generator=torch.Generator()
                            .manual_seed(1))
            with torch.no_grad():
                ref, out = net(x), folded(x)
            # Maps reach ~600 with these statistics: compare to each output's
            # scale (measured 2e-6 of it; float32 rounding of the folded weights).
            for a, b in zip(ref, out):
                self.assertEqual(b.shape, a.shape)
                self.assertLess(float((b - a).abs().max()),
                                2e-5 * float(a.abs().max()))
            # 2 per unit (after each conv) + shortcut BNs + stem + the output
            # layer's BN2d and BN1d are gone; the pre-conv BN of each unit stays.
            units = len(net.body)
            self.assertEqual(_count(folded, nn.BatchNorm2d), units)
            self.assertEqual(_count(folded, nn.BatchNorm1d), 0)
            self.assertGreater(_count(net, nn.BatchNorm2d), 3 * units)
            self.assertFalse(folded.training)
            self.assertFalse(any(p.requires_grad for p in folded.parameters()))
            for k, v in net.state_dict().items():  # the original is untouched
                self.assertTrue(torch.equal(v, before[k]), k)
            # The visibility-weighted embedding (IResNet.embed) folds exactly too.
            w = torch.rand(3, 1, 7, 7, generator=torch.Generator().manual_seed(2))
            with torch.no_grad():
                ref, out = net(x, w)[1], folded(x, w)[1]
            self.assertLess(float((out - ref).abs().max()), 1e-4)
            self.assertGreater(float((ref - net(x)[1]).abs().max()), 1e-2)
            conv = folded.input_layer[0]
            self.assertEqual(
                conv.weight.is_contiguous(memory_format=torch.channels_last)
                and not conv.weight.is_contiguous(), channels_last)

    def test_inference_model_is_folded_and_channels_last(self):
        torch.manual_seed(0)
        net = _randomise_bn(MODELS.build(dict(
            type='IResNet', depth=18, width_mult=0.125,
            embedding_size=16))).eval()
        fast = inference_model(net)
        self.assertTrue(fast.channels_last)
        self.assertFalse(net.channels_last)  # the original keeps its layout
        w = fast.body[0].res_layer[1].weight
        self.assertTrue(w.is_contiguous(memory_format=torch.channels_last))
        self.assertFalse(w.is_contiguous())
        self.assertEqual(_count(fast, nn.BatchNorm1d), 0)
        x = torch.randn(2, 3, 112, 112)
        with torch.no_grad():
            for a, b in zip(net(x), fast(x)):
                self.assertLess(float((b - a).abs().max()),
                                2e-5 * float(a.abs().max()))
        plain = inference_model(net, channels_last=False)
        self.assertFalse(plain.channels_last)
        self.assertTrue(plain.body[0].res_layer[1].weight.is_contiguous())

    def test_bn_before_padded_conv_is_kept(self):
        # Folding it would change the zero padding at the borders.
        seq = _randomise_bn(nn.Sequential(nn.BatchNorm2d(2),
                                          nn.Conv2d(2, 3, 3, padding=1)))
        folded = fold_batchnorm(seq)
        self.assertIsInstance(folded[0], nn.BatchNorm2d)
        x = torch.randn(1, 2, 5, 5)
        torch.testing.assert_close(folded(x), seq.eval()(x))

    def test_bn_flatten_linear_without_affine_bn1d(self):
        seq = _randomise_bn(nn.Sequential(
            nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(),
            nn.Linear(4 * 9, 6), nn.BatchNorm1d(6, affine=False)))
        folded = fold_batchnorm(seq)
        self.assertEqual(_count(folded, nn.modules.batchnorm._BatchNorm), 0)
        x = torch.randn(5, 4, 3, 3)
        with torch.no_grad():
            torch.testing.assert_close(folded(x), seq.eval()(x), rtol=1e-5,
                                       atol=1e-5)

    def test_recognizer_extract_unchanged(self):
        torch.manual_seed(0)
        model = _randomise_bn(MODELS.build(dict(
            type='OAMLRecognizer',
            backbone=dict(type='IResNet', depth=18, width_mult=0.125,
                          embedding_size=16),
            neck=dict(type='OcclusionHead', in_channels=64, hidden_channels=8),
            head=dict(type='AdaFaceHead', in_channels=16, num_classes=4),
            qaconv_head=dict(type='QAConvHead', in_channels=64)))).eval()
        folded = fold_batchnorm(model)
        x = torch.randn(2, 3, 112, 112)
        with torch.no_grad():
            ref = model.extract(x, return_feature_maps=True)
            out = folded.extract(x, return_feature_maps=True)
            for key in ('embedding', 'norm', 'visibility', 'feature_map'):
                torch.testing.assert_close(out[key], ref[key], rtol=1e-4,
                                           atol=1e-5, msg=key)
            # QAConv's own BNs (1-channel, on scores) stay: same matching scores.
            torch.testing.assert_close(
                folded.match(out['feature_map'], out['feature_map']),
                model.match(ref['feature_map'], ref['feature_map']),
                rtol=1e-4, atol=1e-4)


if __name__ == '__main__':
    unittest.main()
