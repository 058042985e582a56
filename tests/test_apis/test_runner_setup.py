"""oaml_mm.apis.runner_setup: the config, runner and error steps the tools share."""
import os.path as osp
import pickle
import re
import tempfile
import unittest

import torch
from mmengine.config import Config

from oaml_mm.apis.runner_setup import (check_loaded_checkpoint,
                                       default_work_dir, exit_on_error,
                                       parse_cfg_options, prepare_config)
from oaml_mm.errors import CheckpointError, ConfigError, DataFormatError


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


if __name__ == '__main__':
    unittest.main()
