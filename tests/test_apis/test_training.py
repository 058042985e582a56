"""oaml_mm.apis.training: tools/train.py's options on a config, and train_model."""
import os.path as osp
import tempfile
import unittest
from unittest import mock

from mmengine.config import Config

from oaml_mm.apis.training import apply_amp, apply_train_options, train_model
from oaml_mm.errors import ConfigError


def _cfg(**extra):
    return Config(dict(optim_wrapper=dict(type='GuardedOptimWrapper'),
                       val_cfg=dict(), val_dataloader=dict(),
                       val_evaluator=dict(), **extra))


class TestTraining(unittest.TestCase):

    def test_defaults_change_only_work_dir_and_launcher(self):
        cfg = apply_train_options(_cfg(), 'cfgs/exp.py')
        self.assertEqual(cfg.work_dir, osp.join('./work_dirs', 'exp'))
        self.assertEqual(cfg.launcher, 'none')
        self.assertEqual(cfg.optim_wrapper.type, 'GuardedOptimWrapper')
        self.assertEqual(cfg.val_cfg, {})
        self.assertNotIn('resume', cfg)

    def test_amp(self):
        for cuda, want, scale in ((True, 'GuardedAmpOptimWrapper', 'dynamic'),
                                  (False, 'GuardedBF16AutocastOptimWrapper',
                                   None)):
            cfg = _cfg()
            with mock.patch('torch.cuda.is_available', return_value=cuda), \
                    mock.patch('builtins.print') as printed:
                self.assertEqual(apply_amp(cfg), want)
            self.assertEqual(cfg.optim_wrapper.get('loss_scale'), scale)
            self.assertEqual(printed.called, not cuda)
        cfg = Config(dict(optim_wrapper=dict(type='ApexOptimWrapper')))
        with self.assertRaisesRegex(ConfigError, "^--amp: .*'ApexOptimWrapper'"
                                    '.*set mixed precision in the config'):
            apply_amp(cfg)

    def test_no_validate_resume_and_auto_scale_lr(self):
        cfg = apply_train_options(_cfg(), 'x.py', 'w', no_validate=True,
                                  resume='auto', launcher='pytorch')
        self.assertEqual((cfg.val_cfg, cfg.val_dataloader, cfg.val_evaluator),
                         (None, None, None))
        self.assertEqual((cfg.resume, cfg.load_from, cfg.work_dir,
                          cfg.launcher), (True, None, 'w', 'pytorch'))
        with tempfile.NamedTemporaryFile(suffix='.pth') as f:
            cfg = apply_train_options(_cfg(), 'x.py', resume=f.name)
            self.assertEqual((cfg.resume, cfg.load_from), (True, f.name))
        with self.assertRaisesRegex(
                ConfigError, '^--resume: nope.pth: no such checkpoint file$'):
            apply_train_options(_cfg(), 'x.py', resume='nope.pth')
        cfg = apply_train_options(
            _cfg(auto_scale_lr=dict(base_batch_size=512)), 'x.py',
            auto_scale_lr=True)
        self.assertTrue(cfg.auto_scale_lr.enable)
        with self.assertRaisesRegex(ConfigError, '^--auto-scale-lr: the config '
                                    'has no `auto_scale_lr'):
            apply_train_options(_cfg(), 'x.py', auto_scale_lr=True)

    def test_train_model_refuses_a_bad_length_before_the_work_dir(self):
        with tempfile.TemporaryDirectory() as d:
            work = osp.join(d, 'work')
            cfg = Config(dict(work_dir=work, launcher='none',
                              train_cfg=dict(max_iters=0)))
            with self.assertRaisesRegex(ConfigError,
                                        'train_cfg.max_iters must be a '
                                        'positive integer, got 0'):
                train_model(cfg)
            self.assertFalse(osp.exists(work))


if __name__ == '__main__':
    unittest.main()
