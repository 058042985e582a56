"""Tests of tools/model_converters/{adaface2oaml,insightface2oaml}.py.

No released file is available offline: the sources are fakes built from our own
IResNet with random weights and renamed to the AdaFace / insightface layouts.
"""
import argparse
import contextlib
import importlib.util
import io
import os.path as osp
import tempfile
import unittest

import torch

from oaml_mm.errors import CheckpointError
from oaml_mm.models.backbones import IResNet
from oaml_mm.models.utils import (adaface_to_oaml, insightface_to_oaml,
                                  oaml_to_insightface)
from oaml_mm.registry import MODELS
from oaml_mm.utils import safe_load_checkpoint

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def load_tool(name):
    path = osp.join(ROOT, 'tools', 'model_converters', f'{name}.py')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def randomise(model):
    """Random weights *and* BN statistics, so every key matters."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if 'var' in name
                        else torch.randn_like(t) * 0.1)
    return model.eval()


def run(tool, argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(
            io.StringIO()):
        code = tool.main(argv)
    return code, err.getvalue()


class TestAdaFace2OAML(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.tool = load_tool('adaface2oaml')
        self.src_model = randomise(
            IResNet(18, width_mult=0.125, embedding_size=16))
        state = {f'model.{k}': v for k, v in self.src_model.state_dict().items()}
        state['head.kernel'] = torch.randn(16, 5)
        state['head.batch_mean'] = torch.tensor([21.0])
        state['head.batch_std'] = torch.tensor([97.0])
        state['head.t'] = torch.zeros(1)
        self.state = state
        self.src = osp.join(self.tmp.name, 'adaface.ckpt')
        torch.save(dict(state_dict=state, epoch=3, global_step=10), self.src)

    def test_convert_gives_same_embedding(self):
        dst = osp.join(self.tmp.name, 'out.pth')
        self.assertEqual(run(self.tool, [self.src, dst])[0], 0)
        ckpt = safe_load_checkpoint(dst)  # weights-only
        meta = ckpt['meta']
        self.assertEqual(meta['channel_order'], 'bgr')
        self.assertEqual(meta['num_classes'], 5)
        model = MODELS.build(dict(
            type='OAMLRecognizer', backbone=meta['backbone'],
            head=dict(type='AdaFaceHead', in_channels=16, num_classes=5),
            loss_weights=dict(adaface=1.0)))
        model.load_state_dict(ckpt['state_dict'], strict=True)
        model.eval()
        x = torch.randn(2, 3, 112, 112)
        with torch.no_grad():
            ours = model.extract(x)
            ref = self.src_model(x)
        torch.testing.assert_close(ours['embedding'], ref[1])
        torch.testing.assert_close(ours['norm'], ref[2])
        self.assertEqual(float(model.head.batch_mean), 21.0)

    def test_backbone_only(self):
        out, meta = adaface_to_oaml(self.state, with_head=False)
        self.assertFalse(any(k.startswith('head.') for k in out))
        self.assertNotIn('num_classes', meta)

    def test_refuses_unmapped_keys(self):
        self.state['head.extra'] = torch.zeros(1)
        self.state['model.body.3.res_layer.9.weight'] = torch.zeros(1)
        with self.assertRaisesRegex(CheckpointError, 'head.extra'):
            adaface_to_oaml(self.state, 'x.ckpt')
        del self.state['head.extra']
        with self.assertRaisesRegex(CheckpointError,
                                    'unexpected body.3.res_layer.9.weight'):
            adaface_to_oaml(self.state, 'x.ckpt')
        self.state['model.body.99.res_layer.0.weight'] = torch.zeros(1)
        with self.assertRaisesRegex(CheckpointError, '9 residual units'):
            adaface_to_oaml(self.state, 'x.ckpt')

    def test_refuses_pickled_objects_with_advice(self):
        bad = osp.join(self.tmp.name, 'lightning.ckpt')
        torch.save(dict(state_dict=self.state,
                        hyper_parameters=argparse.Namespace(lr=0.1)), bad)
        code, err = run(self.tool, [bad, osp.join(self.tmp.name, 'o.pth')])
        self.assertEqual(code, 1)
        self.assertIn('re-save', err)
        self.assertFalse(osp.exists(osp.join(self.tmp.name, 'o.pth')))


class TestInsightface2OAML(unittest.TestCase):

    def test_round_trip_exact(self):
        src_model = randomise(IResNet(
            18, width_mult=0.125, embedding_size=16,
            conv_shortcut_on_stride=True, embedding_bn_affine=True))
        fake = oaml_to_insightface(src_model.state_dict(), (2, 2, 2, 2))
        for key in ('conv1.weight', 'prelu.weight', 'layer1.0.downsample.0.weight',
                    'layer1.0.downsample.1.running_var', 'layer4.1.bn3.bias',
                    'fc.weight', 'features.weight', 'features.bias', 'bn2.weight'):
            self.assertIn(key, fake)
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = osp.join(tmp, 'backbone.pth'), osp.join(tmp, 'o.pth')
            torch.save(fake, src)
            tool = load_tool('insightface2oaml')
            self.assertEqual(run(tool, [src, dst])[0], 0)
            ckpt = safe_load_checkpoint(dst)
        cfg = ckpt['meta']['backbone']
        self.assertTrue(cfg['conv_shortcut_on_stride'])
        self.assertTrue(cfg['embedding_bn_affine'])
        self.assertEqual(ckpt['meta']['channel_order'], 'rgb')
        model = MODELS.build(cfg).eval()
        model.load_state_dict(
            {k[len('backbone.'):]: v for k, v in ckpt['state_dict'].items()})
        x = torch.randn(2, 3, 112, 112)
        with torch.no_grad():
            torch.testing.assert_close(model(x)[1], src_model(x)[1])

    def test_weights_without_batchnorm_counters(self):
        # Old (torch < 0.4.1) or MXNet-converted files have no
        # num_batches_tracked; the running statistics are all inference needs.
        src_model = randomise(IResNet(
            18, width_mult=0.125, embedding_size=16,
            conv_shortcut_on_stride=True, embedding_bn_affine=True))
        fake = oaml_to_insightface(src_model.state_dict(), (2, 2, 2, 2))
        fake = {k: v for k, v in fake.items()
                if not k.endswith('num_batches_tracked')}
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = osp.join(tmp, 'mx.pth'), osp.join(tmp, 'o.pth')
            torch.save(fake, src)
            code, err = run(load_tool('insightface2oaml'), [src, dst])
            self.assertEqual(code, 0, err)
            ckpt = safe_load_checkpoint(dst)
        model = MODELS.build(ckpt['meta']['backbone']).eval()
        model.load_state_dict({k[len('backbone.'):]: v
                               for k, v in ckpt['state_dict'].items()})
        x = torch.randn(2, 3, 112, 112)
        with torch.no_grad():
            torch.testing.assert_close(model(x)[1], src_model(x)[1])
        plain = randomise(IResNet(18, width_mult=0.125, embedding_size=16))
        out, _ = adaface_to_oaml(
            {f'model.{k}': v for k, v in plain.state_dict().items()
             if not k.endswith('num_batches_tracked')}, with_head=False)
        self.assertIn('backbone.input_layer.1.num_batches_tracked', out)

    def test_damaged_source_refused(self):
        from tests.test_apis.helpers import flip_tensor_byte
        model = IResNet(18, width_mult=0.125, embedding_size=8,
                        conv_shortcut_on_stride=True, embedding_bn_affine=True)
        fake = oaml_to_insightface(model.state_dict(), (2, 2, 2, 2))
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = osp.join(tmp, 'bad.pth'), osp.join(tmp, 'o.pth')
            torch.save(fake, src)
            flip_tensor_byte(src)
            code, err = run(load_tool('insightface2oaml'), [src, dst])
            self.assertEqual(code, 1)
            self.assertIn('fails its CRC check', err)
            self.assertFalse(osp.exists(dst))

    def test_refuses_unmapped(self):
        model = IResNet(18, width_mult=0.125, embedding_size=8,
                        conv_shortcut_on_stride=True, embedding_bn_affine=True)
        fake = oaml_to_insightface(model.state_dict(), (2, 2, 2, 2))
        fake['layer2.0.se.fc1.weight'] = torch.zeros(1)
        fake['partial_fc.weight'] = torch.zeros(1)
        with self.assertRaisesRegex(CheckpointError,
                                    'layer2.0.se.fc1.weight.*partial_fc'):
            insightface_to_oaml(fake, 'r18.pth')
        del fake['layer2.0.se.fc1.weight'], fake['partial_fc.weight']
        del fake['layer1.0.downsample.0.weight']
        with self.assertRaisesRegex(CheckpointError, 'missing'):
            insightface_to_oaml(fake, 'r18.pth')


if __name__ == '__main__':
    unittest.main()
