"""oaml_mm.utils.load_config: errors by file, and --cfg-options merged on load."""
import os.path as osp
import tempfile
import unittest

from oaml_mm.errors import ConfigError
from oaml_mm.utils import load_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SYNTHFACE = osp.join(ROOT, 'configs', 'synthface', 'oaml_ir18_synthface.py')


class TestLoadConfig(unittest.TestCase):

    def test_cfg_options_move_a_data_root_everywhere(self):
        plain = load_config(SYNTHFACE)
        cfg = load_config(SYNTHFACE, {'data_root': '/X',
                                      'train_cfg.max_iters': 7})
        self.assertEqual(cfg.data_root, '/X')
        self.assertEqual(
            [d.data_root for d in cfg.train_dataloader.dataset.datasets],
            ['/X/train', '/X/occluded'])
        self.assertEqual(cfg.train_cfg.max_iters, 7)
        # Other roots stay; no options (None or {}) changes nothing.
        self.assertEqual(cfg.val_dataloader.to_dict(),
                         plain.val_dataloader.to_dict())
        for opts in (None, {}):
            self.assertEqual(load_config(SYNTHFACE, opts).to_dict(),
                             plain.to_dict())

    def test_missing_file_and_syntax_error_are_named(self):
        with self.assertRaisesRegex(ConfigError, 'nope.py: no such config file'):
            load_config('nope.py', {'data_root': '/X'})
        with tempfile.TemporaryDirectory() as d:
            bad = osp.join(d, 'bad.py')
            with open(bad, 'w') as f:
                f.write('model = dict(\n')
            with self.assertRaisesRegex(ConfigError, 'bad.py'):
                load_config(bad)

    def test_byte_order_mark_is_named(self):
        with tempfile.TemporaryDirectory() as tmp:
            base = osp.join(tmp, 'base.py')
            with open(base, 'wb') as f:
                f.write(b'\xef\xbb\xbfa = 1\n')
            child = osp.join(tmp, 'child.py')
            with open(child, 'w') as f:
                f.write("_base_ = ['./base.py']\nb = 2\n")
            for path, where in ((base, base), (child, f'(base of {child})')):
                with self.assertRaises(ConfigError) as cm:
                    load_config(path)
                msg = str(cm.exception)
                self.assertIn('byte-order mark', msg)
                self.assertIn(where, msg)
                self.assertEqual(len(msg.splitlines()), 1)


if __name__ == '__main__':
    unittest.main()
