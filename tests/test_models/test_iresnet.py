"""Tests of the IResNet backbone."""
import unittest

import torch

from oaml_mm.errors import ConfigError, InputSizeError
from oaml_mm.models.backbones import IResNet
from oaml_mm.registry import MODELS


def n_params(m):
    return sum(p.numel() for p in m.parameters())


class TestIResNet(unittest.TestCase):

    def test_parameter_counts_match_spec(self):
        # docs/models.md (112x112 input, 512-d); counting needs no forward pass.
        expected = {(18, False): 24_020_352, (34, False): 34_134_080,
                    (50, False): 43_585_600, (101, False): 65_150_912,
                    (50, True): 43_808_320}
        for (depth, se), count in expected.items():
            with self.subTest(depth=depth, se=se):
                self.assertEqual(n_params(IResNet(depth, use_se=se)), count)

    def test_ir100_is_ir101(self):
        self.assertEqual(IResNet(100).units, IResNet(101).units)

    def test_outputs_and_adaface_keys(self):
        torch.manual_seed(0)
        m = MODELS.build(dict(type='IResNet', depth=18, width_mult=0.125,
                              embedding_size=16)).eval()
        maps, emb, norm = m(torch.randn(2, 3, 112, 112))
        self.assertEqual(tuple(maps.shape), (2, 64, 7, 7))
        self.assertEqual(tuple(emb.shape), (2, 16))
        self.assertEqual(tuple(norm.shape), (2, 1))
        torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
        # Embedding * norm is the raw output layer.
        raw = m.output_layer(maps)
        torch.testing.assert_close(emb * norm, raw)
        keys = set(m.state_dict())
        for key in ('input_layer.0.weight', 'body.0.res_layer.1.weight',
                    'body.2.shortcut_layer.0.weight',
                    'body.7.res_layer.5.running_var',
                    'output_layer.0.weight', 'output_layer.3.weight',
                    'output_layer.4.running_mean'):
            self.assertIn(key, keys)
        self.assertNotIn('output_layer.4.weight', keys)  # affine=False
        # Stage 1's first unit keeps the width: parameter-free pooled shortcut.
        self.assertIsInstance(m.body[0].shortcut_layer, torch.nn.MaxPool2d)

    def test_width_and_se_and_options(self):
        m = IResNet(18, width_mult=0.25, embedding_size=128)
        self.assertEqual(m.out_channels, 128)
        self.assertEqual(m.input_layer[0].out_channels, 16)
        se = IResNet(18, use_se=True, width_mult=0.25, embedding_size=8)
        self.assertIn('body.0.res_layer.6.fc1.weight', se.state_dict())
        ins = IResNet(18, width_mult=0.125, embedding_size=8,
                      conv_shortcut_on_stride=True, embedding_bn_affine=True)
        self.assertIn('body.0.shortcut_layer.0.weight', ins.state_dict())
        self.assertIn('output_layer.4.bias', ins.state_dict())

    def test_bottleneck_and_channels_last(self):
        m = IResNet(152, width_mult=0.0625, embedding_size=8).eval()
        maps, emb, _ = m(torch.randn(1, 3, 112, 112))
        self.assertEqual(tuple(maps.shape), (1, 128, 7, 7))
        torch.manual_seed(1)
        a = IResNet(18, width_mult=0.25, embedding_size=8).eval()
        b = IResNet(18, width_mult=0.25, embedding_size=8,
                    channels_last=True).eval()
        b.load_state_dict(a.state_dict())
        x = torch.randn(2, 3, 112, 112)
        torch.testing.assert_close(a(x)[1], b(x)[1], atol=1e-4, rtol=1e-4)

    def test_unweighted_forward_is_trunk_then_output_layer(self):
        # The forward before global visibility existed, written out: weight=None
        # and a weight of ones give bit-identical outputs, for either map stage.
        for stage, cl in ((4, False), (3, True)):
            torch.manual_seed(0)
            m = IResNet(18, width_mult=0.125, embedding_size=8, map_stage=stage,
                        channels_last=cl).eval()
            x = torch.randn(2, 3, 112, 112)
            with torch.no_grad():
                h = m.input_layer(
                    x.contiguous(memory_format=torch.channels_last) if cl else x)
                ref_maps = None
                for i, unit in enumerate(m.body):
                    h = unit(h)
                    if i + 1 == m._map_units:
                        ref_maps = h
                raw = m.output_layer(h)
                ref_norm = torch.norm(raw, 2, 1, True)
                maps, emb, norm = m(x)
                _, emb1, norm1 = m(x, torch.ones(2, 1, 7, 7))
                _, emb_ones14, _ = m(x, torch.ones(2, 1, 14, 14))
            with self.subTest(map_stage=stage):
                self.assertTrue(torch.equal(maps, ref_maps))
                self.assertTrue(torch.equal(norm, ref_norm))
                self.assertTrue(torch.equal(emb, raw / ref_norm))
                self.assertTrue(torch.equal(emb1, emb))
                self.assertTrue(torch.equal(norm1, norm))
                self.assertTrue(torch.equal(emb_ones14, emb))

    def test_zero_weight_cell_does_not_reach_the_embedding(self):
        torch.manual_seed(0)
        m = IResNet(18, width_mult=0.125, embedding_size=8).eval()
        with torch.no_grad():
            _, last = m.forward_maps(torch.randn(2, 3, 112, 112))
            bad = last.clone()
            bad[:, :, 3, 4] += 50.0 * torch.randn_like(bad[:, :, 3, 4])
            w = torch.ones(2, 1, 7, 7)
            w[:, :, 3, 4] = 0.0
            # On a 14x14 grid: the 2x2 block over cell (3, 4), area-averaged.
            w14 = torch.ones(2, 1, 14, 14)
            w14[:, :, 6:8, 8:10] = 0.0
            plain, plain_bad = m.embed(last)[0], m.embed(bad)[0]
            emb, emb_bad = m.embed(last, w)[0], m.embed(bad, w)[0]
            emb14 = m.embed(bad, w14)[0]
        self.assertGreater(float((plain - plain_bad).abs().max()), 1e-2)
        self.assertTrue(torch.equal(emb, emb_bad))
        self.assertTrue(torch.equal(emb14, emb))
        self.assertGreater(float((emb - plain).abs().max()), 1e-3)

    def test_weighted_embedding_gradient(self):
        # Training mode: the cell stays out of the BatchNorm2d statistics too.
        m = IResNet(18, width_mult=0.125, embedding_size=8)
        maps, last = m.forward_maps(torch.randn(2, 3, 112, 112))
        last.retain_grad()
        w = torch.rand(2, 1, 7, 7)
        w[:, :, 0, 0] = 0.0
        emb, norm = m.embed(last, w)
        (emb.sum() + norm.sum()).backward()
        self.assertGreater(float(m.input_layer[0].weight.grad.abs().sum()), 0)
        self.assertTrue(torch.equal(last.grad[:, :, 0, 0],
                                    torch.zeros(2, last.shape[1])))
        self.assertGreater(float(last.grad[:, :, 1:].abs().sum()), 0)
        with self.assertRaisesRegex(ConfigError, 'weight must be'):
            m.embed(last, torch.ones(2, 7, 7))
        with self.assertRaisesRegex(ConfigError, 'weight must be'):
            m.embed(last, torch.ones(3, 1, 7, 7))

    def test_gradient_reaches_stem(self):
        m = IResNet(18, width_mult=0.125, embedding_size=8)
        maps, emb, norm = m(torch.randn(2, 3, 112, 112))
        (emb.sum() + maps.mean() + norm.sum()).backward()
        self.assertGreater(float(m.input_layer[0].weight.grad.abs().sum()), 0)

    def test_bad_config(self):
        with self.assertRaises(ConfigError):
            IResNet(77)
        with self.assertRaises(ConfigError):
            IResNet(18, input_size=100)

    def test_wrong_image_size_is_named(self):
        # 96x96 faces used to fail inside the embedding layer as "mat1 and mat2
        # shapes cannot be multiplied".
        m = IResNet(18, width_mult=0.125, embedding_size=8).eval()
        for h, w in ((96, 96), (112, 96), (128, 128)):
            with self.subTest(size=(h, w)):
                with self.assertRaises(InputSizeError) as ctx:
                    m(torch.zeros(1, 3, h, w))
                msg = str(ctx.exception)
                self.assertTrue(msg.startswith(
                    f'IResNet: input images are {h}x{w}, but this backbone is '
                    'built for 112x112 (input_size=112). Align or resize the '
                    'faces to 112x112'), msg)
                self.assertIn("dict(type='Resize', scale=(112, 112))", msg)
        # The other fixed size: the stem takes 3 channels.
        for shape in ((1, 1, 112, 112), (1, 4, 112, 112), (3, 112, 112)):
            with self.subTest(shape=shape):
                with self.assertRaises(InputSizeError) as ctx:
                    m(torch.zeros(shape))
                self.assertTrue(str(ctx.exception).startswith(
                    f'IResNet: input has shape {shape}, expected a batch of '
                    '3-channel images [B, 3, 112, 112]'), str(ctx.exception))
        # A backbone built for 96x96 takes them.
        small = IResNet(18, width_mult=0.125, embedding_size=8,
                        input_size=96).eval()
        self.assertEqual(small(torch.zeros(1, 3, 96, 96))[1].shape, (1, 8))


if __name__ == '__main__':
    unittest.main()


class TestIResNetMapStage(unittest.TestCase):

    def test_stage3_maps_same_embedding(self):
        torch.manual_seed(0)
        a = IResNet(18, width_mult=0.125, embedding_size=16).eval()
        b = IResNet(18, width_mult=0.125, embedding_size=16, map_stage=3).eval()
        # Same parameters and keys: a checkpoint loads into either.
        self.assertEqual(set(a.state_dict()), set(b.state_dict()))
        b.load_state_dict(a.state_dict())
        x = torch.randn(2, 3, 112, 112)
        maps4, emb4, _ = a(x)
        maps3, emb3, _ = b(x)
        self.assertEqual(tuple(maps3.shape), (2, 32, 14, 14))
        self.assertEqual((b.out_channels, b.map_size), (32, 14))
        self.assertEqual((a.out_channels, a.map_size), (64, 7))
        torch.testing.assert_close(emb3, emb4)
        # The stage-3 maps are what the last stage starts from.
        torch.testing.assert_close(b.body[b._map_units:](maps3), maps4)

    def test_forward_stages(self):
        m = IResNet(18, width_mult=0.125, embedding_size=8, map_stage=3).eval()
        keys = list(IResNet(18, width_mult=0.125, embedding_size=8).state_dict())
        self.assertEqual(list(m.state_dict()), keys)  # no new parameters
        self.assertEqual(m.stage_channels, (8, 16, 32, 64))
        x = torch.randn(2, 3, 112, 112)
        stages = m.forward_stages(x)
        self.assertEqual([tuple(s.shape) for s in stages],
                         [(2, 8, 56, 56), (2, 16, 28, 28), (2, 32, 14, 14),
                          (2, 64, 7, 7)])
        maps, last = m.forward_maps(x)
        torch.testing.assert_close(stages[2], maps)
        torch.testing.assert_close(stages[3], last)
        # The default outputs are unchanged: forward is forward_maps + embed.
        out = m(x)
        torch.testing.assert_close(out[1], m.embed(stages[3])[0])
        with self.assertRaises(InputSizeError):
            m.forward_stages(torch.randn(1, 3, 96, 96))

    def test_stage1_and_bad_stage(self):
        m = IResNet(18, width_mult=0.125, embedding_size=8, map_stage=1).eval()
        self.assertEqual(tuple(m(torch.randn(1, 3, 112, 112))[0].shape),
                         (1, 8, 56, 56))
        with self.assertRaisesRegex(ConfigError, 'map_stage'):
            IResNet(18, map_stage=5)
