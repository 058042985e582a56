"""tools/train.py, tools/test.py and tools/dist_train.sh, run as a user runs them."""
import glob
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import tempfile
import time
from unittest import TestCase

import torch

from tests.reliability._util import free_port
from tests.toy_components import read_losses, write_toy_config_file

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    env['PYTHON'] = sys.executable
    env['OMP_NUM_THREADS'] = '1'
    env.pop('RANK', None)
    env.pop('WORLD_SIZE', None)
    env.pop('LOCAL_RANK', None)
    # A port of its own: pytest -n 2 runs other torchrun jobs at the same time.
    env['PORT'] = str(free_port())
    return env


def _run(args, timeout=240):
    proc = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    return proc


class TestTrainAndTestTools(TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.work = osp.join(self.tmp.name, 'work')
        self.cfg = write_toy_config_file(
            osp.join(self.tmp.name, 'toy.py'), self.work, max_epochs=2)

    def tearDown(self):
        self.tmp.cleanup()

    def test_train_resume_and_test_out(self):
        proc = _run([sys.executable, 'tools/train.py', self.cfg])
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assertTrue(osp.isfile(osp.join(self.work, 'epoch_2.pth')))
        losses = read_losses(self.work)
        self.assertEqual(sorted(losses), list(range(12)))

        # --resume with an explicit path: training is already complete, so
        # it only reloads; the weights must load with weights_only=True.
        proc = _run([
            sys.executable, 'tools/train.py', self.cfg, '--resume',
            osp.join(self.work, 'epoch_1.pth'), '--cfg-options',
            'train_cfg.max_epochs=3'
        ])
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assertEqual(sorted(read_losses(self.work)), list(range(18)))

        out = osp.join(self.tmp.name, 'metrics.json')
        proc = _run([
            sys.executable, 'tools/test.py', self.cfg,
            osp.join(self.work, 'epoch_2.pth'), '--out', out
        ])
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        with open(out) as f:
            metrics = json.load(f)
        self.assertIn('accuracy', metrics)

    def test_checkpoint_that_loads_only_partly_is_refused(self):
        # mmengine's load_from kept fc2 at its initial values (a log warning)
        # and the figures were those of a half-random model.
        from oaml_mm.utils import atomic_save
        from tests.toy_components import ToyClassifier
        torch.manual_seed(0)
        state = {k: v for k, v in ToyClassifier().state_dict().items()
                 if not k.startswith('fc2.')}
        ckpt = osp.join(self.tmp.name, 'part.pth')
        atomic_save({'state_dict': state}, ckpt)
        out = osp.join(self.tmp.name, 'metrics.json')
        proc = _run([sys.executable, 'tools/test.py', self.cfg, ckpt,
                     '--out', out], timeout=120)
        self.assertNotEqual(proc.returncode, 0)
        self.assertRegex(proc.stderr.strip().splitlines()[-1],
                         r'^CheckpointError: .*part\.pth: .*fc2\.')
        self.assertFalse(osp.exists(out))

    def test_missing_resume_file_is_a_clear_error(self):
        proc = _run([
            sys.executable, 'tools/train.py', self.cfg, '--resume',
            osp.join(self.tmp.name, 'nope.pth')
        ])
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn('nope.pth: no such checkpoint file', proc.stderr)
        self.assertNotIn('Traceback', proc.stderr)

    def test_truncated_checkpoint_is_refused_before_the_runner(self):
        # The runner was built (work dir, log folder, ~500 log lines) before
        # the truncated file failed to load.
        from oaml_mm.utils import atomic_save
        from tests.toy_components import ToyClassifier
        good = osp.join(self.tmp.name, 'good.pth')
        atomic_save({'state_dict': ToyClassifier().state_dict()}, good)
        with open(good, 'rb') as f:
            data = f.read()
        cut = osp.join(self.tmp.name, 'cut.pth')
        with open(cut, 'wb') as f:
            f.write(data[:len(data) // 2])
        for tool, args in (('tools/test.py', [cut]),
                           ('tools/train.py', ['--resume', cut]),
                           ('tools/calibrate.py', [cut])):
            with self.subTest(tool=tool):
                work = osp.join(self.tmp.name, osp.basename(tool)[:-3])
                proc = _run([sys.executable, tool, self.cfg, *args,
                             '--work-dir', work], timeout=120)
                self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
                lines = proc.stderr.strip().splitlines()
                self.assertRegex(
                    lines[-1], '^CheckpointError: ' + re.escape(cut) +
                    r': incomplete or damaged checkpoint \(truncated write\?\)'
                    '; expected a readable PyTorch checkpoint')
                self.assertNotIn('Traceback', proc.stderr)
                self.assertLess(len(lines) + len(proc.stdout.splitlines()),
                                5, proc.stderr[-2000:])
                # No runner: no log folder in the work dir.
                self.assertEqual(glob.glob(osp.join(work, '2*')), [])

    def test_test_out_checked_before_evaluating(self):
        ckpt = osp.join(self.tmp.name, 'any.pth')
        open(ckpt, 'wb').close()
        os.makedirs(osp.join(self.tmp.name, 'm.csv'))
        for out, msg in (
                (self.tmp.name, f"--out '{self.tmp.name}' is a directory"),
                ('/proc/oaml_metrics.json',
                 "--out '/proc/oaml_metrics.json' cannot be written"),
                (osp.join(self.tmp.name, 'm.json'),
                 'the CSV next to --out ')):
            with self.subTest(out=out):
                proc = _run([sys.executable, 'tools/test.py', self.cfg, ckpt,
                             '--out', out], timeout=120)
                self.assertEqual(proc.returncode, 2, proc.stderr)
                self.assertEqual(proc.stderr.strip().splitlines(),
                                 [proc.stderr.strip()])
                self.assertIn(msg, proc.stderr)
                self.assertFalse(osp.exists(self.work))  # nothing evaluated

    def test_amp_on_cpu_uses_bf16_autocast(self):
        proc = _run([
            sys.executable, 'tools/train.py', self.cfg, '--amp',
            '--cfg-options', 'train_cfg.max_epochs=1'
        ])
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assertIn('bfloat16 autocast', proc.stdout + proc.stderr)
        self.assertTrue(osp.isfile(osp.join(self.work, 'epoch_1.pth')))

    def test_dist_train_two_cpu_processes(self):
        proc = _run(['bash', 'tools/dist_train.sh', self.cfg, '2'],
                    timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stderr[-4000:])
        w0 = torch.load(osp.join(self.work, 'final-rank0.pth'))
        w1 = torch.load(osp.join(self.work, 'final-rank1.pth'))
        for key in w0:
            self.assertTrue(torch.equal(w0[key], w1[key]), key)
        # Each rank saw half of the data: 24 samples / 2 ranks / batch 4.
        self.assertEqual(sorted(read_losses(self.work, rank=1)),
                         list(range(6)))
        ckpt = torch.load(osp.join(self.work, 'epoch_2.pth'),
                          weights_only=True)
        self.assertEqual(ckpt['meta']['epoch'], 2)


def _children(pid):
    """Pids of the live child processes of ``pid`` (Linux /proc)."""
    out = set()
    for path in glob.glob(f'/proc/{pid}/task/*/children'):
        try:
            with open(path) as f:
                out.update(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _alive(pid):
    """True while ``pid`` runs (a zombie waiting for its reaper counts as ended)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            state = f.read().rsplit(')', 1)[1].split()[0]
    except OSError:
        return False
    return state not in ('Z', 'X')


class TestLaunchers(TestCase):
    """tools/dist_train.sh as a user starts it from a plain shell, and stops it."""

    def test_runs_without_an_activated_venv_and_dies_with_its_launcher(self):
        with tempfile.TemporaryDirectory() as tmp:
            work = osp.join(tmp, 'work')
            cfg = write_toy_config_file(osp.join(tmp, 'toy.py'), work,
                                        max_epochs=10**6)
            # No venv on PATH and no $PYTHON: the script finds the interpreter.
            env = {'PATH': '/usr/bin:/bin', 'HOME': os.environ.get('HOME', tmp),
                   'PYTHONPATH': ROOT, 'OMP_NUM_THREADS': '1',
                   'PORT': str(free_port())}
            proc = subprocess.Popen(
                ['bash', 'tools/dist_train.sh', cfg, '2'], cwd=ROOT, env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                start_new_session=True)
            ranks = set()
            try:
                deadline = time.time() + 180
                started = [osp.join(work, f'losses-rank{r}.jsonl') for r in (0, 1)]
                while not all(osp.isfile(f) and os.path.getsize(f) for f in started):
                    if proc.poll() is not None:
                        self.fail('the launcher ended before training: '
                                  + proc.stderr.read()[-3000:])
                    self.assertLess(time.time(), deadline, 'no rank trained')
                    time.sleep(0.5)
                ranks = _children(proc.pid)
                self.assertEqual(len(ranks), 2, ranks)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                deadline = time.time() + 30
                while any(_alive(r) for r in ranks) and time.time() < deadline:
                    time.sleep(0.2)
                survivors = [r for r in ranks if _alive(r)]
                self.assertEqual(survivors, [], 'ranks still running after '
                                 'kill -9 of the launcher')
            finally:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                for r in ranks:
                    if _alive(r):
                        os.kill(r, signal.SIGKILL)
                proc.stderr.close()
