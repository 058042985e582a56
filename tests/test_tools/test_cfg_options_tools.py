"""Every tool's ``--cfg-options``: an item without ``=`` is argparse's usage error."""
import contextlib
import glob
import importlib.util
import io
import os.path as osp
import unittest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

#: Tool -> its positional arguments. Tools with a ``parse_args(argv)`` are
#: called through it, the others through ``main(argv)``.
TOOLS = {
    'tools/visualize_pipeline.py': ['cfg.py'],
    'tools/analysis/browse_dataset.py': ['cfg.py'],
    'tools/analysis/review_dataset.py': ['cfg.py', 'ckpt.pth'],
    'tools/analysis/occlusion_report.py': ['cfg.py', 'ckpt.pth'],
    'tools/dataset_converters/filter_dataset.py': ['cfg.py', '--out', 'x'],
    'tools/train.py': ['cfg.py'],
    'tools/test.py': ['cfg.py', 'ckpt.pth'],
    'tools/calibrate.py': ['cfg.py', 'ckpt.pth'],
}


def _load(rel):
    name = 'cfgopt_' + osp.splitext(osp.basename(rel))[0]
    spec = importlib.util.spec_from_file_location(name, osp.join(ROOT, rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class TestToolCfgOptions(unittest.TestCase):

    def test_item_without_equals_exits_with_usage_error(self):
        for rel, positional in TOOLS.items():
            with self.subTest(tool=rel):
                tool = _load(rel)
                entry = getattr(tool, 'parse_args', None) or tool.main
                argv = positional + ['--cfg-options', 'model.x']
                err = io.StringIO()
                with contextlib.redirect_stderr(err), \
                        self.assertRaises(SystemExit) as cm:
                    entry(argv)
                self.assertEqual(cm.exception.code, 2, err.getvalue())
                self.assertIn("item 'model.x' has no \"=\"", err.getvalue())
                self.assertIn('model.x=VALUE', err.getvalue())

    def test_no_tool_parses_cfg_options_with_dict_action(self):
        files = glob.glob(osp.join(ROOT, 'tools', '**', '*.py'),
                          recursive=True)
        files += glob.glob(osp.join(ROOT, 'projects', '**', '*.py'),
                           recursive=True)
        files.append(osp.join(ROOT, 'oaml_mm', 'visualization',
                              'pipeline_grid.py'))
        for path in files:
            with open(path, encoding='utf-8') as f:
                src = f.read()
            self.assertFalse('DictAction' in src, path)
            if "'--cfg-options'" in src and 'add_argument' in src:
                self.assertIn('CfgOptionsAction', src, path)


if __name__ == '__main__':
    unittest.main()
