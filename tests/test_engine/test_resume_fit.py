"""A resumed run whose config no longer fits the checkpoint: one-line errors."""
import os.path as osp

import torch.nn as nn
from mmengine.config import Config
from mmengine.testing import RunnerTestCase

from oaml_mm.errors import CheckpointError
from oaml_mm.registry import MODELS, RUNNERS
from tests.reliability._util import train
from tests.toy_components import ToyClassifier, toy_config


@MODELS.register_module(force=True)
class ToyClassesClassifier(ToyClassifier):
    """ToyClassifier with a configurable number of classes."""

    def __init__(self, num_classes: int = 4, data_preprocessor=None) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        self.fc2 = nn.Linear(16, num_classes)


class TestResumeFit(RunnerTestCase):

    def build(self, cfg):
        cfg = Config(cfg)
        cfg.experiment_name = self.experiment_name
        return RUNNERS.build(cfg)

    def _trained(self, **model):
        work = osp.join(self.temp_dir.name, 'run')
        cfg = toy_config(work, max_epochs=1)
        cfg['model'] = dict(type='ToyClassesClassifier', **model)
        self.build(cfg).train()
        return work, osp.join(work, 'epoch_1.pth')

    def _resume(self, work, change):
        cfg = toy_config(work, max_epochs=2)
        cfg['model'] = dict(type='ToyClassesClassifier')
        cfg['resume'] = True
        change(cfg)
        return self.build(cfg)

    def test_changed_num_classes(self):
        work, ckpt = self._trained(num_classes=4)
        runner = self._resume(
            work, lambda c: c['model'].update(num_classes=6))
        with self.assertRaises(CheckpointError) as ctx:
            runner.train()
        msg = str(ctx.exception)
        self.assertEqual(
            msg.split('. ')[0],
            f'{ckpt}: cannot resume: fc2.weight is 4x16 in the checkpoint but '
            '6x16 in the model; fc2.bias is 4 in the checkpoint but 6 in the '
            'model')
        self.assertIn('num_classes', msg)
        self.assertIn(f'load_from={ckpt} and without --resume', msg)
        self.assertNotIn('\n', msg)

    def test_sgd_to_adamw(self):
        work, ckpt = self._trained()

        def adamw(cfg):
            cfg['optim_wrapper']['optimizer'] = dict(type='AdamW', lr=1e-3)

        with self.assertRaises(CheckpointError) as ctx:
            self._resume(work, adamw).train()
        msg = str(ctx.exception)
        self.assertIn(f'{ckpt}: cannot resume: the optimizer state in the '
                      'checkpoint has dampening, momentum, nesterov, which '
                      'AdamW does not use and lacks amsgrad, betas, eps, '
                      'which AdamW needs: the optimizer type changed', msg)
        self.assertNotIn('\n', msg)

    def test_same_config_still_resumes(self):
        work, _ = self._trained()
        runner = self._resume(work, lambda c: None)
        runner.train()
        self.assertEqual(runner.epoch, 2)

    def test_tools_train_prints_one_line(self):
        work, ckpt = self._trained()
        cfg = toy_config(work, max_epochs=2)
        cfg['optim_wrapper']['optimizer'] = dict(type='AdamW', lr=1e-3)
        cfg['model'] = dict(type='ToyClassesClassifier')
        cfg['custom_imports']['imports'].append(
            'tests.test_engine.test_resume_fit')
        path = osp.join(self.temp_dir.name, 'adamw.py')
        Config(cfg).dump(path)
        proc = train(path, '--resume')
        self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
        self.assertNotIn('Traceback', proc.stderr)
        self.assertTrue(proc.stderr.strip().splitlines()[-1].startswith(
            f'CheckpointError: {ckpt}: cannot resume: the optimizer state'))
