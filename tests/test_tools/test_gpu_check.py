"""tools/misc/gpu_check.sh: the CPU dry run of the GPU readiness check."""
import importlib.util
import json
import math
import os
import os.path as osp
import subprocess
import sys
import tempfile
from unittest import TestCase, mock, skipIf

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(ROOT, 'tools', 'misc', 'gpu_check.sh')


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    env['PYTHON'] = sys.executable
    env['OMP_NUM_THREADS'] = '1'
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        env.pop(key, None)
    return env


def _module():
    spec = importlib.util.spec_from_file_location(
        'gpu_check', osp.join(ROOT, 'tools', 'misc', 'gpu_check.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class TestGpuCheck(TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.out = osp.join(self.tmp.name, 'out')

    def tearDown(self):
        self.tmp.cleanup()

    def test_dry_run_runs_every_step_and_writes_results(self):
        proc = subprocess.run(['bash', SCRIPT, '--dry-run', '--out', self.out],
                              cwd=ROOT, env=_env(), capture_output=True,
                              text=True, timeout=600)
        self.assertEqual(proc.returncode, 0, proc.stderr[-4000:])
        with open(osp.join(self.out, 'gpu_check.json')) as f:
            res = json.load(f)
        self.assertIn('dry run', res['machine']['mode'])
        self.assertEqual(list(res['steps']), ['train', 'ddp', 'qaconv', 'ijbc'])
        names = []
        for step, r in res['steps'].items():
            self.assertEqual(r['status'], 'ok', step)
            self.assertTrue(r['rows'], step)
            for row in r['rows']:
                self.assertTrue(math.isfinite(row['value']) and row['value'] > 0,
                                row)
                names.append(row['name'])
        for name in ('train/images_per_s', 'ddp/one_process_wall_time',
                     'qaconv/qaconv_match/fp32/novis',
                     'qaconv/qaconv_match/bf16/vis', 'ijbc/qaconv_pairs_per_s',
                     'ijbc/qaconv_time_all_pairs'):
            self.assertIn(name, names)
        ddp = res['steps']['ddp']['rows'][0]['note']
        self.assertIn('backend gloo', ddp)  # no CUDA: torchrun + gloo
        self.assertTrue(osp.isfile(osp.join(self.out, 'ddp_work',
                                            'iter_2.pth')))
        with open(osp.join(self.out, 'gpu_check.md')) as f:
            md = f.read()
        table = [ln for ln in md.splitlines() if ln.startswith('| train ')]
        self.assertEqual(len(table), 2)
        # Every table row keeps its 7 cells (a '|' inside a note is escaped).
        for line in md.splitlines():
            if line.startswith('| qaconv '):
                self.assertEqual(line.replace('\\|', '').count('|'), 8, line)

    @skipIf(torch.cuda.is_available(), 'this machine has CUDA')
    def test_without_cuda_asks_for_dry_run(self):
        proc = subprocess.run(['bash', SCRIPT, '--out', self.out], cwd=ROOT,
                              env=_env(), capture_output=True, text=True,
                              timeout=120)
        self.assertEqual(proc.returncode, 2)
        self.assertIn('--dry-run', proc.stderr)
        self.assertFalse(osp.exists(osp.join(self.out, 'gpu_check.json')))

    def test_failed_step_is_reported_and_fails_the_run(self):
        mod = _module()
        from benchmarks import gpu_check
        with mock.patch.object(gpu_check, 'step_qaconv',
                               side_effect=RuntimeError('kernel missing')):
            rc = mod.main(['--dry-run', '--steps', 'qaconv', 'ijbc',
                           '--out', self.out])
        self.assertEqual(rc, 1)
        with open(osp.join(self.out, 'gpu_check.json')) as f:
            steps = json.load(f)['steps']
        self.assertEqual(steps['qaconv']['status'],
                         'FAILED: RuntimeError: kernel missing')
        self.assertEqual(steps['ijbc']['status'], 'ok')  # the others still run
        self.assertEqual(mod.main(['--dry-run', '--batch-size', '6',
                                   '--out', self.out]), 2)
