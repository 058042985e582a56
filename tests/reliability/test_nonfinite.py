"""Fault: NaN/Inf in the loss or the gradients.

Injected by ``ToyNonFiniteClassifier`` (tests/toy_components.py) at chosen iterations;
the guard is :func:`oaml_mm.engine.guarded_update`.
"""
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper
from mmengine.testing import RunnerTestCase

from oaml_mm.engine import (NONFINITE_CONSECUTIVE, NONFINITE_TOTAL,
                            guarded_update)
from oaml_mm.errors import NonFiniteLossError
from oaml_mm.registry import RUNNERS
from oaml_mm.utils import safe_load_checkpoint
from tests.reliability._util import train
from tests.toy_components import (read_losses, toy_config,
                                  write_toy_config_file)


def _cfg(work_dir, max_epochs=1, **model):
    cfg = toy_config(work_dir, max_epochs=max_epochs)
    cfg['model'] = dict(type='ToyNonFiniteClassifier', **model)
    cfg['val_cfg'] = cfg['val_dataloader'] = cfg['val_evaluator'] = None
    cfg['train_cfg'] = dict(by_epoch=True, max_epochs=max_epochs)
    return cfg


class TestGuardedUpdate(RunnerTestCase):
    """The function alone: counters, skipped steps, the abort."""

    def setUp(self):
        super().setUp()
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 1)
        self.wrapper = OptimWrapper(
            torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9))
        self.hub = MessageHub.get_instance('test_guarded_update')
        self.x = torch.randn(4, 3)

    def _loss(self, scale=1.0):
        return (self.model(self.x) ** 2).mean() * scale

    def test_finite_update_steps_and_resets(self):
        self.hub.update_info(NONFINITE_CONSECUTIVE, 2)
        before = self.model.weight.detach().clone()
        self.assertTrue(guarded_update(self.wrapper, self._loss(), self.hub))
        self.assertFalse(torch.equal(before, self.model.weight))
        self.assertEqual(self.hub.get_info(NONFINITE_CONSECUTIVE), 0)

    def test_nonfinite_loss_skips_and_counts(self):
        before = self.model.weight.detach().clone()
        for i, bad in enumerate([float('nan'), float('inf'), -float('inf')]):
            self.assertFalse(
                guarded_update(self.wrapper, self._loss(bad), self.hub))
            self.assertEqual(self.hub.get_info(NONFINITE_CONSECUTIVE), i + 1)
        self.assertTrue(torch.equal(before, self.model.weight))
        self.assertIsNone(self.model.weight.grad)
        self.assertEqual(self.hub.get_info(NONFINITE_TOTAL), 3)

    def test_nonfinite_grad_skips(self):
        before = self.model.weight.detach().clone()
        # Finite loss, NaN gradient: sqrt'(0) * 0 = inf * 0.
        loss = torch.sqrt(self.model.weight * 0).sum() + self._loss()
        self.assertTrue(torch.isfinite(loss))
        self.assertFalse(guarded_update(self.wrapper, loss, self.hub))
        self.assertTrue(torch.equal(before, self.model.weight))
        self.assertEqual(self.hub.get_info(NONFINITE_TOTAL), 1)
        # Guard off: the same update poisons the weights (so the test can fail).
        self.wrapper.update_params(
            (torch.sqrt(self.model.weight * 0)).sum() + self._loss())
        self.assertFalse(torch.isfinite(self.model.weight).all())

    def test_consecutive_limit_raises(self):
        guarded_update(self.wrapper, self._loss(float('nan')), self.hub,
                       max_consecutive=2)
        with self.assertRaisesRegex(NonFiniteLossError,
                                    '2 consecutive updates skipped.*nan'):
            guarded_update(self.wrapper, self._loss(float('nan')), self.hub,
                           max_consecutive=2)

    def test_dict_of_losses(self):
        losses = dict(loss_a=self._loss(), loss_b=self._loss(float('nan')),
                      acc=torch.tensor(float('nan')))
        self.assertFalse(guarded_update(self.wrapper, losses, self.hub))
        losses = dict(loss_a=self._loss(), acc=torch.tensor(float('nan')))
        self.assertTrue(guarded_update(self.wrapper, losses, self.hub))


class TestNonFiniteTraining(RunnerTestCase):
    """The guard inside a run: skipped, counted, aborted with a checkpoint."""

    def build(self, cfg):
        cfg = Config(cfg)
        cfg.experiment_name = self.experiment_name
        return RUNNERS.build(cfg)

    def test_isolated_nan_and_inf_are_skipped(self):
        work = osp.join(self.temp_dir.name, 'a')
        runner = self.build(_cfg(work, nan_loss_iters=[1], inf_loss_iters=[3],
                                 nan_grad_iters=[4]))
        runner.train()
        self.assertEqual(runner.message_hub.get_info(NONFINITE_TOTAL), 3)
        self.assertEqual(runner.message_hub.get_info(NONFINITE_CONSECUTIVE), 0)
        for name, p in runner.model.named_parameters():
            self.assertTrue(torch.isfinite(p).all(), name)
        # The counters travel with the checkpoint (resume keeps counting).
        ckpt = safe_load_checkpoint(osp.join(work, 'epoch_1.pth'))
        self.assertEqual(
            ckpt['message_hub']['runtime_info'][NONFINITE_TOTAL], 3)

    def test_unguarded_run_is_poisoned(self):
        # Guards the test above: the same faults without the guard ruin the weights.
        work = osp.join(self.temp_dir.name, 'b')
        runner = self.build(_cfg(work, nan_loss_iters=[1], guard=False))
        runner.train()
        self.assertFalse(torch.isfinite(runner.model.fc1.weight).all())

    def test_repeated_nan_stops_with_checkpoint(self):
        work = osp.join(self.temp_dir.name, 'c')
        runner = self.build(_cfg(work, max_epochs=2,
                                 nan_loss_iters=range(2, 100),
                                 max_nonfinite_skips=3))
        with self.assertRaises(NonFiniteLossError) as ctx:
            runner.train()
        msg = str(ctx.exception)
        self.assertIn('3 consecutive updates skipped', msg)
        # Iterations 2, 3, 4 (0-based) were skipped; the file is named 1-based.
        path = osp.join(work, 'nonfinite_iter_5.pth')
        self.assertIn(path, msg)
        ckpt = safe_load_checkpoint(path)
        state = runner.model.state_dict()
        for key, value in ckpt['state_dict'].items():
            self.assertTrue(torch.isfinite(value).all(), key)
            self.assertTrue(torch.equal(value, state[key]), key)
        self.assertIn('optimizer', ckpt)
        # The skipped iterations are logged with their NaN loss; the third raised.
        losses = read_losses(work)
        self.assertEqual(sorted(losses), [0, 1, 2, 3])
        self.assertTrue(all(losses[i] != losses[i] for i in (2, 3)))

    def test_tools_train_prints_the_error(self):
        cfg_path = osp.join(self.temp_dir.name, 'nan.py')
        work = osp.join(self.temp_dir.name, 'd')
        write_toy_config_file(cfg_path, work, max_epochs=1)
        proc = train(cfg_path, '--cfg-options',
                     'model.type=ToyNonFiniteClassifier',
                     'model.nan_loss_iters=[1,2,3,4,5]',
                     'model.max_nonfinite_skips=2')
        self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
        self.assertIn('NonFiniteLossError: 2 consecutive updates skipped',
                      proc.stderr)
        self.assertNotIn('Traceback', proc.stderr)
        self.assertTrue(osp.isfile(osp.join(work, 'nonfinite_iter_3.pth')))
