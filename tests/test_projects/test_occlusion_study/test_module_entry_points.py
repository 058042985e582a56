"""``python -m projects.occlusion_study.<module>``: a command line or one clear line."""
import os
import os.path as osp
import subprocess
import sys
import unittest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def _run_module(name, *args):
    env = dict(os.environ, PYTHONPATH=ROOT, OAML_MALLOC_TUNING='0')
    return subprocess.run([sys.executable, '-m', name, *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


class TestModuleEntryPoints(unittest.TestCase):

    def test_demo_module_runs_the_demo_command_line(self):
        # It once imported, did nothing and exited 0.
        out = _run_module('projects.occlusion_study.demo', '--help')
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn('--seeds', out.stdout)
        self.assertIn('--skip-train', out.stdout)

    def test_library_module_says_so_and_exits_2(self):
        out = _run_module('projects.occlusion_study.synthface_runs')
        self.assertEqual(out.returncode, 2)
        self.assertEqual(len(out.stderr.strip().splitlines()), 1, out.stderr)
        self.assertIn('library module', out.stderr)
        self.assertIn('tools/demo.py', out.stderr)


if __name__ == '__main__':
    unittest.main()
