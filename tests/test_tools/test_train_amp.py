"""tools/train.py --amp: which optimizer wrapper each config type becomes."""
import importlib.util
import os.path as osp
from unittest import TestCase, mock

from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _train_tool():
    spec = importlib.util.spec_from_file_location(
        'oaml_train_tool', osp.join(ROOT, 'tools', 'train.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class TestAmpFlag(TestCase):

    def setUp(self):
        self.tool = _train_tool()

    def _amp_type(self, wrapper_type, cuda):
        cfg = Config(dict(work_dir='w', optim_wrapper=dict(
            type=wrapper_type, optimizer=dict(type='SGD', lr=0.1))))
        args = self.tool.parse_args(['cfg.py', '--amp'])
        with mock.patch('torch.cuda.is_available', return_value=cuda), \
                mock.patch('builtins.print'):
            cfg = self.tool.merge_args(cfg, args)
        return cfg.optim_wrapper.type, cfg.optim_wrapper.get('loss_scale')

    def test_guard_stays_on(self):
        self.assertEqual(self._amp_type('GuardedOptimWrapper', cuda=True),
                         ('GuardedAmpOptimWrapper', 'dynamic'))
        self.assertEqual(self._amp_type('GuardedOptimWrapper', cuda=False),
                         ('GuardedBF16AutocastOptimWrapper', None))

    def test_plain_wrapper(self):
        self.assertEqual(self._amp_type('OptimWrapper', cuda=True),
                         ('AmpOptimWrapper', 'dynamic'))
        self.assertEqual(self._amp_type('OptimWrapper', cuda=False),
                         ('BF16AutocastOptimWrapper', None))

    def test_unknown_wrapper_refused(self):
        with self.assertRaises(SystemExit) as ctx:
            self._amp_type('ApexOptimWrapper', cuda=True)
        self.assertIn('set mixed precision in the config', str(ctx.exception))
