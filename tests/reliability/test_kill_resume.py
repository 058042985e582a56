"""Fault: SIGKILL during training and during a checkpoint write; then ``--resume``.

Every run is ``tools/train.py`` in a subprocess on the toy config (3 epochs x 6
iterations, CPU, seed 42, num_workers=0, one checkpoint kept so that the pruning
order matters). The resumed run's final weights must equal the uninterrupted run's.
"""
import os
import os.path as osp
import random
import shutil
import tempfile
from unittest import TestCase

import torch
from mmengine.config import Config
from mmengine.testing import RunnerTestCase

from oaml_mm.engine.runner.oaml_runner import find_resumable_checkpoint
from oaml_mm.errors import CheckpointError
from oaml_mm.registry import RUNNERS
from oaml_mm.utils import safe_load_checkpoint
from tests.reliability._util import train
from tests.toy_components import (Interrupt, read_losses, toy_config,
                                  write_toy_config_file)

KEEP_ONE = ('--cfg-options', 'default_hooks.checkpoint.max_keep_ckpts=1')
#: Seeded, so CI kills at the same (random) iteration every time; 7..17 lies after
#: the first checkpoint and before the last, so the resume has work to redo.
KILL_ITER = random.Random(20240508).randint(7, 17)


def _final(work):
    return torch.load(osp.join(work, 'final-rank0.pth'), weights_only=True)


class TestKillAndResume(TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.ref_work = osp.join(cls.tmp.name, 'ref')
        cfg = write_toy_config_file(
            osp.join(cls.tmp.name, 'ref.py'), cls.ref_work, max_epochs=3)
        proc = train(cfg, *KEEP_ONE)
        assert proc.returncode == 0, proc.stderr[-3000:]
        cls.ref_weights = _final(cls.ref_work)
        cls.ref_losses = read_losses(cls.ref_work)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def _configs(self, name, kill_hook):
        work = osp.join(self.tmp.name, name)
        killed = write_toy_config_file(
            osp.join(self.tmp.name, f'{name}_kill.py'), work, max_epochs=3,
            extra_hooks=[kill_hook])
        plain = write_toy_config_file(
            osp.join(self.tmp.name, f'{name}.py'), work, max_epochs=3)
        return work, killed, plain

    def _assert_same_as_reference(self, work):
        weights = _final(work)
        self.assertEqual(sorted(weights), sorted(self.ref_weights))
        for key, value in self.ref_weights.items():
            self.assertTrue(torch.equal(value, weights[key]), key)
        losses = read_losses(work)
        self.assertEqual(losses, self.ref_losses)

    def test_sigkill_at_random_iteration_then_resume(self):
        work, killed, plain = self._configs(
            'rand', dict(type='InterruptHook', at_iter=KILL_ITER, sigkill=True))
        proc = train(killed, *KEEP_ONE)
        self.assertEqual(proc.returncode, -9, proc.stderr[-2000:])
        done_epochs = KILL_ITER // 6
        ckpts = sorted(f for f in os.listdir(work) if f.endswith('.pth'))
        self.assertEqual(ckpts, [f'epoch_{done_epochs}.pth']
                         if done_epochs else [])
        proc = train(plain, '--resume', *KEEP_ONE)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self._assert_same_as_reference(work)

    def test_sigkill_during_checkpoint_write_then_resume(self):
        work, killed, plain = self._configs(
            'write', dict(type='KillDuringCheckpointWriteHook', at_save=2))
        proc = train(killed, *KEEP_ONE)
        self.assertEqual(proc.returncode, -9, proc.stderr[-2000:])
        files = sorted(os.listdir(work))
        # The previous checkpoint is intact, the cut one has no checkpoint name.
        self.assertIn('epoch_1.pth', files)
        self.assertNotIn('epoch_2.pth', files)
        tmps = [f for f in files if f.endswith('.tmp')]
        self.assertEqual(len(tmps), 1, files)
        self.assertTrue(tmps[0].startswith('epoch_2.pth.'))
        self.assertEqual(
            safe_load_checkpoint(osp.join(work, 'epoch_1.pth'))['meta']['epoch'],
            1)
        with self.assertRaises(CheckpointError):
            safe_load_checkpoint(osp.join(work, tmps[0]))
        self.assertEqual(find_resumable_checkpoint(work)[0],
                         osp.join(work, 'epoch_1.pth'))

        proc = train(plain, '--resume', *KEEP_ONE)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self._assert_same_as_reference(work)
        self.assertFalse([f for f in os.listdir(work) if f.endswith('.tmp')])


class TestDamagedLastCheckpoint(RunnerTestCase):
    """A checkpoint damaged outside our writer (copied, cut by another tool)."""

    def build(self, cfg):
        cfg = Config(cfg)
        cfg.experiment_name = self.experiment_name
        return RUNNERS.build(cfg)

    def _crash_after_two_epochs(self, work):
        with self.assertRaises(Interrupt):
            self.build(toy_config(work, extra_hooks=[
                dict(type='InterruptHook', at_iter=14)])).train()
        path = osp.join(work, 'epoch_2.pth')
        size = osp.getsize(path)
        with open(path, 'r+b') as f:
            f.truncate(size // 2)
        return path

    def test_auto_resume_falls_back_to_previous_complete(self):
        ref_dir = osp.join(self.temp_dir.name, 'ref')
        ref = self.build(toy_config(ref_dir))
        ref.train()
        work = osp.join(self.temp_dir.name, 'run')
        damaged = self._crash_after_two_epochs(work)
        path, rejected = find_resumable_checkpoint(work)
        self.assertEqual(path, osp.join(work, 'epoch_1.pth'))
        self.assertEqual(len(rejected), 1)
        self.assertIn('epoch_2.pth: incomplete or damaged', rejected[0])
        cfg = toy_config(work)
        cfg['resume'] = True
        resumed = self.build(cfg)
        resumed.train()
        state = resumed.model.state_dict()
        for key, value in ref.model.state_dict().items():
            self.assertTrue(torch.equal(value, state[key]), key)
        # The damaged file was overwritten by a complete one.
        self.assertEqual(safe_load_checkpoint(damaged)['meta']['epoch'], 2)

    def test_explicit_damaged_checkpoint_is_a_clear_error(self):
        work = osp.join(self.temp_dir.name, 'run')
        damaged = self._crash_after_two_epochs(work)
        cfg = toy_config(osp.join(self.temp_dir.name, 'other'))
        cfg.update(resume=True, load_from=damaged)
        with self.assertRaisesRegex(CheckpointError,
                                    'epoch_2.pth: incomplete or damaged'):
            self.build(cfg).train()
        # Nothing complete at all: refuse rather than silently start over.
        os.remove(osp.join(work, 'epoch_1.pth'))
        with self.assertRaisesRegex(CheckpointError, 'nothing to resume'):
            find_resumable_checkpoint(work)
        empty = osp.join(self.temp_dir.name, 'empty')
        os.makedirs(empty)
        self.assertEqual(find_resumable_checkpoint(empty), (None, []))
        shutil.rmtree(empty)
