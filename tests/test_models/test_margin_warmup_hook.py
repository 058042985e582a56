"""Tests of MarginWarmupHook (oaml_mm.engine.hooks; drives the margin heads)."""
import unittest
from types import SimpleNamespace

import torch
from mmengine.logging import MessageHub

from oaml_mm.errors import ConfigError
from oaml_mm.registry import HOOKS, MODELS


class TestMarginWarmupHook(unittest.TestCase):

    def test_ramp_drives_heads(self):
        hook = HOOKS.build(dict(type='MarginWarmupHook', warmup_ratio=0.3))
        head = MODELS.build(dict(type='CosFaceHead', in_channels=4,
                                 num_classes=3, m=0.4))
        model = torch.nn.Sequential(torch.nn.Linear(2, 2), head)
        runner = SimpleNamespace(model=model, iter=0, max_iters=100,
                                 message_hub=MessageHub.get_instance('mwh'))
        for it, expected in ((0, 0.0), (15, 0.5), (30, 1.0), (90, 1.0)):
            runner.iter = it
            hook.before_train_iter(runner, it)
            self.assertAlmostEqual(head.margin_scale, expected)
            self.assertAlmostEqual(head.margin, 0.4 * expected)
        self.assertAlmostEqual(
            runner.message_hub.get_scalar('train/margin_scale').current(), 1.0)
        runner.iter = 3
        hook.before_train_iter(runner, 3)
        hook.after_train(runner)
        self.assertEqual(head.margin_scale, 1.0)

    def test_iters_override_and_errors(self):
        hook = HOOKS.build(dict(type='MarginWarmupHook', warmup_iters=10))
        self.assertAlmostEqual(hook.factor(5, 1000), 0.5)
        self.assertEqual(HOOKS.build(dict(type='MarginWarmupHook',
                                          warmup_ratio=0)).factor(0, 10), 1.0)
        with self.assertRaises(ConfigError):
            HOOKS.build(dict(type='MarginWarmupHook', warmup_ratio=1.5))


if __name__ == '__main__':
    unittest.main()
