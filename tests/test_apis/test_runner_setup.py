"""oaml_mm.apis.runner_setup: the config, runner and error steps the tools share."""
import argparse
import contextlib
import io
import os
import os.path as osp
import pickle
import re
import tempfile
import unittest
from unittest import mock

import torch
from mmengine.config import Config

from oaml_mm.apis import runner_setup
from oaml_mm.apis.calibrate import (calibrate_checkpoint,
                                    check_calibration_inputs)
from oaml_mm.apis.evaluate import evaluate_checkpoint
from oaml_mm.apis.runner_setup import (build_runner, check_loaded_checkpoint,
                                       check_runner_checkpoint,
                                       default_work_dir, exit_on_error,
                                       parse_cfg_options, parse_launcher_args,
                                       prepare_config)
from oaml_mm.apis.training import train_model
from oaml_mm.errors import (CheckpointError, ConfigError, DataFormatError,
                            UnsafeCheckpointError)
from oaml_mm.utils import atomic_save
from tests.toy_components import ToyClassifier, toy_config


class _Runner:
    """What check_loaded_checkpoint reads of a runner: its (wrapped) model."""

    def __init__(self, model, wrapped=False):
        if wrapped:
            wrapper = torch.nn.Module()
            wrapper.module = model
            model = wrapper
        self.model = model


class TestRunnerSetup(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def test_default_work_dir(self):
        cfg = Config(dict(work_dir='from_cfg'))
        self.assertEqual(default_work_dir(cfg, 'a/b/exp.py', 'given'), 'given')
        self.assertEqual(cfg.work_dir, 'given')
        cfg = Config(dict(work_dir='from_cfg'))
        self.assertEqual(default_work_dir(cfg, 'a/b/exp.py'), 'from_cfg')
        cfg = Config(dict())
        self.assertEqual(default_work_dir(cfg, 'a/b/exp.py'),
                         osp.join('./work_dirs', 'exp'))

    def test_parse_launcher_args(self):
        def parse(argv, env):
            parser = argparse.ArgumentParser()
            parser.add_argument('config')
            with mock.patch.dict(os.environ, env, clear=True):
                args = parse_launcher_args(parser, argv)
                return args, os.environ.get('LOCAL_RANK')

        args, rank = parse(['c.py'], {})
        self.assertEqual((args.config, args.cfg_options, args.launcher,
                          args.local_rank, rank), ('c.py', None, 'none', 0, '0'))
        args, rank = parse(['c.py', '--launcher', 'pytorch', '--local-rank', '3',
                            '--cfg-options', 'a.b=1', 'c=x,y'], {})
        self.assertEqual((args.launcher, args.local_rank, rank),
                         ('pytorch', 3, '3'))
        self.assertEqual(args.cfg_options, {'a.b': 1, 'c': ['x', 'y']})
        # The launcher's own LOCAL_RANK wins; --local_rank is the old spelling.
        args, rank = parse(['c.py', '--local_rank', '2'], {'LOCAL_RANK': '5'})
        self.assertEqual((args.local_rank, rank), (2, '5'))
        for bad in (['c.py', '--launcher', 'ssh'], ['c.py', '--cfg-options', 'k']):
            with contextlib.redirect_stderr(io.StringIO()), \
                    self.assertRaises(SystemExit) as cm:
                parse(bad, {})
            self.assertEqual(cm.exception.code, 2)

    def test_prepare_config_applies_options_work_dir_and_launcher(self):
        path = osp.join(self.tmp.name, 'my_exp.py')
        with open(path, 'w') as f:
            f.write("data_root = 'd'\nlauncher = 'slurm'\n"
                    "train_dataloader = dict(dataset=dict(data_root=data_root))"
                    "\n")
        cfg = prepare_config(path, {'data_root': 'elsewhere'})
        # The copy the config made of data_root follows the override.
        self.assertEqual(cfg.train_dataloader.dataset.data_root, 'elsewhere')
        self.assertEqual(cfg.launcher, 'slurm')  # None keeps the config's
        self.assertEqual(cfg.work_dir, osp.join('./work_dirs', 'my_exp'))
        cfg = prepare_config(path, None, 'w', 'pytorch')
        self.assertEqual((cfg.work_dir, cfg.launcher), ('w', 'pytorch'))
        with self.assertRaisesRegex(ConfigError, 'missing.py'):
            prepare_config(osp.join(self.tmp.name, 'missing.py'))

    def test_prepare_config_takes_the_command_lines_strings(self):
        # Before: a list as the tools pass on the command line raised
        # AttributeError ('list' object has no attribute 'items').
        path = osp.join(self.tmp.name, 'my_exp.py')
        with open(path, 'w') as f:
            f.write("data_root = 'd'\nsizes = [1]\n"
                    "train_dataloader = dict(dataset=dict(data_root=data_root))"
                    "\n")
        cfg = prepare_config(path, ['data_root=elsewhere', 'sizes=2,3',
                                    'x.y=a=b'])
        self.assertEqual(cfg.train_dataloader.dataset.data_root, 'elsewhere')
        self.assertEqual(cfg.sizes, [2, 3])
        self.assertEqual(cfg.x.y, 'a=b')
        self.assertEqual(parse_cfg_options(('k=1',)), {'k': 1})
        self.assertEqual(parse_cfg_options({'k': '1'}), {'k': '1'})
        for bad, msg in ((['data_root'], "cfg_options item 'data_root': expected a "
                          "'key=value' string"),
                         ([3], 'cfg_options item 3: expected'),
                         ('data_root=x', "cfg_options 'data_root=x': "
                          'expected a dict or a list')):
            with self.subTest(bad=bad), self.assertRaisesRegex(
                    ConfigError, '^' + re.escape(msg)):
                prepare_config(path, bad)

    def test_check_loaded_checkpoint(self):
        model = torch.nn.Sequential(torch.nn.Linear(3, 2))
        good = osp.join(self.tmp.name, 'good.pth')
        torch.save(dict(state_dict=model.state_dict()), good)
        for wrapped in (False, True):
            check_loaded_checkpoint(_Runner(model, wrapped), good)
        other = osp.join(self.tmp.name, 'other.pth')
        torch.save(dict(state_dict=torch.nn.Sequential(
            torch.nn.Linear(3, 4)).state_dict()), other)
        with self.assertRaisesRegex(CheckpointError,
                                    r'other\.pth.*shape mismatches: 0\.'):
            check_loaded_checkpoint(_Runner(model), other)

    def test_exit_on_error(self):
        with self.assertRaises(SystemExit) as cm, exit_on_error():
            raise DataFormatError('a.bin', 'no pairs')
        self.assertEqual(str(cm.exception), 'DataFormatError: a.bin: no pairs')
        with self.assertRaises(SystemExit) as cm, exit_on_error():
            raise pickle.UnpicklingError('Unsupported global: os.system\nmore')
        self.assertEqual(
            str(cm.exception), 'refused to load a checkpoint that holds '
            'objects other than weights (it could run code): Unsupported '
            'global: os.system')
        # Anything else is a bug: its traceback stays.
        with self.assertRaises(KeyError), exit_on_error():
            raise KeyError('x')
        with exit_on_error():
            pass


def _write_checkpoints(folder):
    """A real tiny checkpoint and a copy cut to its first half."""
    good = osp.join(folder, 'good.pth')
    atomic_save(dict(state_dict=ToyClassifier().state_dict(),
                     meta=dict(iter=6, epoch=1)), good)
    with open(good, 'rb') as f:
        data = f.read()
    cut = osp.join(folder, 'epoch_1.pth')
    with open(cut, 'wb') as f:
        f.write(data[:len(data) // 2])
    return good, cut


class TestCheckRunnerCheckpoint(unittest.TestCase):
    """A damaged checkpoint stops every runner path before the runner is built."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.good, self.cut = _write_checkpoints(self.tmp.name)
        self.work = osp.join(self.tmp.name, 'work')
        # Building a runner at all is the failure here.
        for target in (runner_setup.RUNNERS, runner_setup.Runner):
            name = 'build' if target is runner_setup.RUNNERS else 'from_cfg'
            patcher = mock.patch.object(target, name,
                                        side_effect=AssertionError(
                                            'a runner was built'))
            patcher.start()
            self.addCleanup(patcher.stop)

    def _cfg(self, **extra):
        cfg = Config(toy_config(self.work))
        cfg.update(extra)
        return cfg

    def _refused(self, fn, *args):
        msg = (re.escape(self.cut) + r': incomplete or damaged checkpoint '
               r'\(truncated write\?\); expected a readable PyTorch checkpoint')
        with self.assertRaisesRegex(CheckpointError, msg):
            fn(*args)
        self.assertFalse(runner_setup.RUNNERS.build.called)

    def test_every_path_refuses_a_truncated_checkpoint_first(self):
        # tools/test.py, tools/calibrate.py, --resume PATH and load_from.
        self._refused(evaluate_checkpoint, self._cfg(), self.cut)
        self._refused(calibrate_checkpoint, self._cfg(), self.cut)
        self._refused(check_calibration_inputs, self.cut,
                      osp.join(self.tmp.name, 'out.pth'))
        self._refused(train_model, self._cfg(load_from=self.cut, resume=True,
                                             launcher='none'))
        self._refused(build_runner, self._cfg(load_from=self.cut))
        cfg = self._cfg(load_from=self.good)
        check_runner_checkpoint(cfg)
        with self.assertRaisesRegex(AssertionError, 'a runner was built'):
            build_runner(cfg)

    def test_resume_without_a_path_refuses_when_nothing_verifies(self):
        os.makedirs(self.work)
        cut = osp.join(self.work, 'epoch_1.pth')
        os.replace(self.cut, cut)
        with open(osp.join(self.work, 'last_checkpoint'), 'w') as f:
            f.write(cut)
        with self.assertRaisesRegex(
                CheckpointError, re.escape(osp.abspath(self.work)) +
                r': nothing to resume from: .*epoch_1\.pth: incomplete or '
                'damaged'):
            train_model(self._cfg(resume=True, launcher='none'))
        self.assertFalse(runner_setup.RUNNERS.build.called)
        # A complete older file is what the runner will resume from.
        os.replace(self.good, osp.join(self.work, 'iter_6.pth'))
        check_runner_checkpoint(self._cfg(resume=True))
        # No work dir yet, a remote path: nothing to check.
        check_runner_checkpoint(Config(dict(resume=True, work_dir='nope')))
        check_runner_checkpoint(Config(dict(load_from='s3://b/x.pth')))

    def test_a_pickle_naming_code_is_refused_without_loading_tensors(self):
        evil = osp.join(self.tmp.name, 'evil.pth')
        torch.save(dict(state_dict={'w': torch.zeros(2)}, fn=os.system), evil)
        with self.assertRaisesRegex(UnsafeCheckpointError, r'evil\.pth: .*system'):
            check_runner_checkpoint(self._cfg(load_from=evil))


if __name__ == '__main__':
    unittest.main()
