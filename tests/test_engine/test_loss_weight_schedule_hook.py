"""Tests of LossWeightScheduleHook (oaml_mm.engine.hooks; ramps the loss split)."""
import unittest
from types import SimpleNamespace

import torch
from mmengine.logging import MessageHub

from oaml_mm.errors import ConfigError
from oaml_mm.registry import HOOKS


def runner_with(weights, max_iters=100):
    model = torch.nn.Linear(1, 1)
    model.loss_weights = dict(weights)
    return SimpleNamespace(model=model, iter=0, max_iters=max_iters,
                           message_hub=MessageHub.get_instance('lwsh'))


class TestLossWeightScheduleHook(unittest.TestCase):

    def test_ramp_sets_the_split(self):
        hook = HOOKS.build(dict(type='LossWeightScheduleHook', start=0.1,
                                end=0.5, begin_ratio=0.2, end_ratio=0.6))
        runner = runner_with(dict(adaface=0.1, qaconv=0.9, occlusion=1.0))
        hook.before_train(runner)
        w = runner.model.loss_weights
        for it, ada in ((0, 0.1), (20, 0.1), (40, 0.3), (60, 0.5), (99, 0.5)):
            runner.iter = it
            hook.before_train_iter(runner, it)
            self.assertAlmostEqual(w['adaface'], ada)
            self.assertAlmostEqual(w['qaconv'], 1.0 - ada)  # the sum is kept
            self.assertEqual(w['occlusion'], 1.0)
        self.assertAlmostEqual(
            runner.message_hub.get_scalar('train/weight_adaface').current(), 0.5)
        hook.after_train(runner)  # the configured split comes back
        self.assertEqual(w, dict(adaface=0.1, qaconv=0.9, occlusion=1.0))

    def test_errors(self):
        for kw in (dict(start=-0.1), dict(begin_ratio=0.5, end_ratio=0.5),
                   dict(end_ratio=1.5), dict(total=0.3)):
            with self.assertRaises(ConfigError, msg=str(kw)):
                HOOKS.build(dict(type='LossWeightScheduleHook', **kw))
        hook = HOOKS.build(dict(type='LossWeightScheduleHook'))
        with self.assertRaisesRegex(ConfigError, 'loss_weights'):
            hook.before_train(runner_with(dict(adaface=1.0)))
        with self.assertRaisesRegex(ConfigError, 'total'):
            HOOKS.build(dict(type='LossWeightScheduleHook', end=0.9)).before_train(
                runner_with(dict(adaface=0.1, qaconv=0.5)))


if __name__ == '__main__':
    unittest.main()
