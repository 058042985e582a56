import os
import os.path as osp
import tempfile
from unittest import TestCase

from mmengine.config import Config

from oaml_mm.engine.runner import check_dataloader_configs, check_train_config
from oaml_mm.errors import ConfigError
from oaml_mm.registry import RUNNERS
from tests.reliability._util import train
from tests.toy_components import toy_config, write_toy_config_file


def _loader(loader_bs, sampler_bs, kind='PKSampler'):
    return dict(batch_size=loader_bs,
                sampler=dict(type=kind, batch_size=sampler_bs,
                             num_instances=4))


class TestCheckTrainConfig(TestCase):

    def test_training_length_must_be_positive(self):
        for key in ('max_iters', 'max_epochs'):
            for bad in (0, -3, 2.5, True):
                with self.assertRaisesRegex(
                        ConfigError,
                        f'^train_cfg.{key} must be a positive integer, got '
                        f'{bad!r}; set e.g. --cfg-options train_cfg.{key}=1$'):
                    check_train_config(None, {key: bad})
            check_train_config(None, {key: 1})
        check_train_config(None, dict(by_epoch=True))
        check_train_config(None, None)

    def test_loader_and_group_sampler_batch_sizes_must_match(self):
        for kind in ('PKSampler', 'GraphSampler', 'oaml_mm.PKSampler'):
            with self.assertRaises(ConfigError) as ctx:
                check_train_config(_loader(30, 32, kind), None)
            msg = str(ctx.exception)
            self.assertNotIn('\n', msg)
            self.assertIn('train_dataloader.batch_size (30)', msg)
            self.assertIn('train_dataloader.sampler.batch_size (32)', msg)
            self.assertIn(kind.split('.')[-1], msg)
            check_train_config(_loader(32, 32, kind), None)
        # Samplers without identity groups have no batch_size of their own.
        check_train_config(
            dict(batch_size=30, sampler=dict(type='DefaultSampler')), None)

    def test_negative_num_workers_one_line(self):
        # PyTorch's own "num_workers option should be non-negative" named no
        # loader and came as a traceback.
        for bad in (-1, 1.5, True):
            with self.assertRaisesRegex(
                    ConfigError, rf'^val_dataloader.num_workers must be an '
                    rf'integer >= 0 .*got {bad!r}; set e.g. --cfg-options '
                    r'val_dataloader.num_workers=2$'):
                check_dataloader_configs(val_dataloader=dict(num_workers=bad))
        check_dataloader_configs(val_dataloader=dict(num_workers=0),
                                 test_dataloader=None)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = toy_config(osp.join(tmp, 'w'))
            cfg['train_dataloader']['num_workers'] = -1
            with self.assertRaisesRegex(ConfigError,
                                        '^train_dataloader.num_workers'):
                RUNNERS.build(Config(cfg))
        from oaml_mm.engine.hooks import DualLoaderHook
        with self.assertRaisesRegex(ConfigError,
                                    '^occluded_dataloader.num_workers'):
            DualLoaderHook(occluded_dataloader=dict(num_workers=-2))

    def test_runner_train_refuses_before_training(self):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = toy_config(osp.join(tmp, 'w'))
            cfg['train_dataloader']['sampler'] = dict(
                type='PKSampler', batch_size=8, num_instances=4)
            with self.assertRaisesRegex(ConfigError, r'\(4\) differs'):
                RUNNERS.build(Config(cfg)).train()
            cfg = toy_config(osp.join(tmp, 'w'))
            cfg['train_cfg']['max_epochs'] = 0
            runner = RUNNERS.build(Config(cfg))
            with self.assertRaisesRegex(ConfigError, 'max_epochs'):
                runner.train()
            # Refused before any checkpoint or lock.
            self.assertEqual(
                [f for f in os.listdir(osp.join(tmp, 'w'))
                 if f.endswith('.pth') or f.startswith('.oaml_train')], [])

    def test_tools_train_reports_one_line(self):
        with tempfile.TemporaryDirectory() as tmp:
            work = osp.join(tmp, 'w')
            cfg = write_toy_config_file(osp.join(tmp, 'toy.py'), work)
            proc = train(cfg, '--cfg-options', 'train_cfg.max_epochs=0')
            self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
            self.assertNotIn('Traceback', proc.stderr)
            self.assertEqual(
                proc.stderr.strip().splitlines()[-1],
                'ConfigError: train_cfg.max_epochs must be a positive '
                'integer, got 0; set e.g. --cfg-options train_cfg.max_epochs=1')
            self.assertFalse(osp.exists(work))
            proc = train(cfg, '--cfg-options',
                         'train_dataloader.sampler.type=PKSampler',
                         'train_dataloader.sampler.batch_size=8')
            self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
            self.assertTrue(proc.stderr.strip().splitlines()[-1].startswith(
                'ConfigError: train_dataloader.batch_size (4) differs from '
                'train_dataloader.sampler.batch_size (8) of the PKSampler'))
            self.assertFalse(os.path.exists(work))
