"""Fault: SIGKILL during training and during a checkpoint write; then ``--resume``.

Every run is ``tools/train.py`` in a subprocess on the toy config (3 epochs x 6
iterations, or 12 iterations of an iteration-based loop, CPU, seed 42,
num_workers=0, one checkpoint kept so that the pruning order matters). The resumed
run's losses and final weights must equal the uninterrupted run's.
"""
import os
import os.path as osp
import random
import shutil
import tempfile
from typing import Optional
from unittest import TestCase, mock

import torch
from mmengine.config import Config
from mmengine.testing import RunnerTestCase

from oaml_mm.engine.runner.oaml_runner import (check_checkpoint_file,
                                               find_resumable_checkpoint)
from oaml_mm.errors import CheckpointError, UnsafeCheckpointError
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


def write_iter_config_file(path: str, work_dir: str, extra_hooks=(),
                           workers: int = 0) -> str:
    """The toy config with ``IterBasedTrainLoop``: 12 iterations (2 passes over
    the data), a checkpoint and a validation every 4, the LR dropped at 6."""
    cfg = toy_config(work_dir, extra_hooks=list(extra_hooks))
    if workers:
        cfg['train_dataloader'].update(num_workers=workers,
                                       persistent_workers=True)
    cfg['train_cfg'] = dict(by_epoch=False, max_iters=12, val_interval=4)
    cfg['param_scheduler'] = [
        dict(type='MultiStepLR', by_epoch=False, milestones=[6], gamma=0.1)
    ]
    cfg['default_hooks']['checkpoint'] = dict(
        type='CheckpointHook', by_epoch=False, interval=4, max_keep_ckpts=1)
    cfg['log_processor'] = dict(by_epoch=False)
    cfg['custom_hooks'].append(dict(type='FinalWeightsHook'))
    Config(cfg).dump(path)
    return path


class TestIterBasedKillAndResume(TestCase):
    """mmengine fast-forwards the dataloader on resume after the random state was
    restored; the skipped batches' augmentation must not consume it."""

    def test_sigkill_between_checkpoints_then_resume(self):
        self._kill_and_resume(workers=0)

    def test_with_persistent_dataloader_workers(self):
        # The workers replay the skipped batches (reseeded from the run's seed),
        # so their random state at the resume point is the uninterrupted one.
        self._kill_and_resume(workers=2)

    def _kill_and_resume(self, workers):
        with tempfile.TemporaryDirectory() as tmp:
            ref = osp.join(tmp, 'ref')
            proc = train(write_iter_config_file(osp.join(tmp, 'ref.py'), ref,
                                                workers=workers))
            self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
            work = osp.join(tmp, 'run')
            killed = write_iter_config_file(
                osp.join(tmp, 'kill.py'), work,
                [dict(type='InterruptHook', at_iter=7, sigkill=True)],
                workers=workers)
            proc = train(killed)
            self.assertEqual(proc.returncode, -9, proc.stderr[-2000:])
            self.assertEqual(
                sorted(f for f in os.listdir(work) if f.endswith('.pth')),
                ['iter_4.pth'])
            proc = train(write_iter_config_file(osp.join(tmp, 'plain.py'),
                                                work, workers=workers),
                         '--resume')
            self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
            ref_losses, losses = read_losses(ref), read_losses(work)
            self.assertEqual(sorted(ref_losses), list(range(12)))
            # Iterations 4..6 ran twice (killed run, resumed run): the resumed
            # values overwrite the killed run's, and must be the reference's.
            self.assertEqual(losses, ref_losses)
            # max_keep_ckpts=1 prunes the killed run's iter_4.pth as well.
            ckpts = [sorted(f for f in os.listdir(d) if f.endswith('.pth')
                            and f.startswith('iter_')) for d in (ref, work)]
            self.assertEqual(ckpts, [['iter_12.pth'], ['iter_12.pth']])
            ref_w, w = _final(ref), _final(work)
            self.assertEqual(sorted(w), sorted(ref_w))
            for key, value in ref_w.items():
                self.assertTrue(torch.equal(value, w[key]), key)


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


def _save_fake(path: str, it: int, legacy: bool = False,
               epoch: Optional[int] = None) -> str:
    """A small checkpoint whose meta says it was saved after ``it`` iterations
    (and, for an ``epoch_N.pth``, epochs: N unless given)."""
    name = osp.basename(path)
    if epoch is None:
        epoch = int(name[6:-4]) if name.startswith('epoch_') else 0
    ckpt = {'meta': {'iter': it, 'epoch': epoch},
            'state_dict': {'w': torch.arange(64.)}}
    if legacy:
        torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(ckpt, path)
    return path


class TestResumeCandidates(TestCase):
    """Which file ``--resume`` (no path) picks; each case failed before."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.work = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def _last(self, path):
        with open(osp.join(self.work, 'last_checkpoint'), 'w') as f:
            f.write(path)

    def test_damaged_last_checkpoint_kinds_fall_back(self):
        def zero_head(data):
            return b'\0' * 16 + data[16:]

        def zero_all(data):
            return b'\0' * len(data)

        def truncate(data):
            return data[:len(data) // 2]

        for legacy in (False, True):
            for damage in (zero_head, zero_all, truncate):
                with self.subTest(legacy=legacy, damage=damage.__name__):
                    for f in os.listdir(self.work):
                        os.remove(osp.join(self.work, f))
                    good = _save_fake(osp.join(self.work, 'iter_4.pth'), 4,
                                      legacy)
                    bad = _save_fake(osp.join(self.work, 'iter_8.pth'), 8,
                                     legacy)
                    with open(bad, 'rb') as f:
                        data = f.read()
                    with open(bad, 'wb') as f:
                        f.write(damage(data))
                    self._last(bad)
                    path, rejected = find_resumable_checkpoint(self.work)
                    self.assertEqual(path, good)
                    self.assertEqual(len(rejected), 1, rejected)
                    self.assertIn('iter_8.pth', rejected[0])
                    self.assertNotIn('could run code', rejected[0])
                    with self.assertRaisesRegex(CheckpointError,
                                                'iter_8.pth: ') as ctx:
                        check_checkpoint_file(bad)
                    self.assertNotIsInstance(ctx.exception,
                                             UnsafeCheckpointError)

    def test_last_checkpoint_names_a_moved_work_dir(self):
        _save_fake(osp.join(self.work, 'epoch_1.pth'), 6)
        _save_fake(osp.join(self.work, 'epoch_2.pth'), 12)
        self._last('/no/such/old_work_dir/epoch_2.pth')
        # The work dir's own file of that name.
        self.assertEqual(find_resumable_checkpoint(self.work),
                         (osp.join(self.work, 'epoch_2.pth'), []))
        os.remove(osp.join(self.work, 'epoch_2.pth'))
        path, rejected = find_resumable_checkpoint(self.work)
        self.assertEqual(path, osp.join(self.work, 'epoch_1.pth'))
        self.assertIn('/no/such/old_work_dir/epoch_2.pth, which lies outside '
                      'this work dir', rejected[0])
        # Nothing left to resume from: an error, not a silent fresh start.
        os.remove(osp.join(self.work, 'epoch_1.pth'))
        with self.assertRaisesRegex(CheckpointError, 'nothing to resume'):
            find_resumable_checkpoint(self.work)

    def test_copied_work_dir_never_resumes_from_the_original(self):
        # A copy of a run folder whose last_checkpoint names the original
        # place, where another run's weights (a later iteration) sit now.
        orig = osp.join(self.work, 'orig')
        copy = osp.join(self.work, 'copy')
        for d in (orig, copy):
            os.makedirs(d)
        _save_fake(osp.join(orig, 'iter_8.pth'), 8)
        _save_fake(osp.join(orig, 'iter_12.pth'), 12)
        _save_fake(osp.join(copy, 'iter_8.pth'), 8)
        with open(osp.join(copy, 'last_checkpoint'), 'w') as f:
            f.write(osp.join(orig, 'iter_8.pth'))
        self.assertEqual(find_resumable_checkpoint(copy),
                         (osp.join(copy, 'iter_8.pth'), []))
        # Its own file damaged: its other files, never the original folder's.
        _save_fake(osp.join(copy, 'iter_4.pth'), 4)
        with open(osp.join(copy, 'iter_8.pth'), 'r+b') as f:
            f.truncate(100)
        path, rejected = find_resumable_checkpoint(copy)
        self.assertEqual(path, osp.join(copy, 'iter_4.pth'))
        self.assertIn('iter_8.pth', rejected[0])

    def test_forged_iteration_count_does_not_win_newest(self):
        _save_fake(osp.join(self.work, 'iter_4.pth'), 4)
        _save_fake(osp.join(self.work, 'iter_8.pth'), 8)
        # meta['iter'] edited to look newest: contradicts the file name.
        _save_fake(osp.join(self.work, 'iter_2.pth'), 10**9)
        # Renamed too, but the message hub still says iteration 3.
        forged = {'meta': {'iter': 900, 'epoch': 0},
                  'message_hub': {'runtime_info': {'iter': 2}},
                  'state_dict': {'w': torch.arange(64.)}}
        torch.save(forged, osp.join(self.work, 'iter_900.pth'))
        path, rejected = find_resumable_checkpoint(self.work)
        self.assertEqual(path, osp.join(self.work, 'iter_8.pth'))
        self.assertEqual(len(rejected), 2, rejected)
        text = ' '.join(rejected)
        self.assertIn("iter_2.pth: meta['iter'] is 1000000000 but the file "
                      'name says 2', text)
        self.assertIn("iter_900.pth: meta['iter'] is 900 but the message hub "
                      'was saved at iteration 3', text)

    def test_newest_by_saved_iteration_not_by_file_number(self):
        # iter_100 was saved at iteration 100, epoch_2 later (iteration 240):
        # the numbers in the names count different things.
        _save_fake(osp.join(self.work, 'epoch_2.pth'), 240)
        _save_fake(osp.join(self.work, 'iter_100.pth'), 100)
        _save_fake(osp.join(self.work, 'epoch_1.pth'), 120)
        path, rejected = find_resumable_checkpoint(self.work)
        self.assertEqual(path, osp.join(self.work, 'epoch_2.pth'))
        self.assertEqual(rejected, [])

    def test_explicit_truncated_legacy_file_is_a_clear_error(self):
        work = osp.join(self.work, 'w')
        cut = _save_fake(osp.join(self.work, 'old.pth'), 4, legacy=True)
        with open(cut, 'rb') as f:
            data = f.read()
        with open(cut, 'wb') as f:
            f.write(data[:len(data) - 100])
        cfg = write_toy_config_file(osp.join(self.work, 'toy.py'), work)
        proc = train(cfg, '--resume', cut)
        self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
        self.assertIn('CheckpointError: ', proc.stderr)
        self.assertIn('old.pth: not a readable torch checkpoint',
                      proc.stderr)
        self.assertNotIn('Traceback', proc.stderr)


class TestResumePastTheEnd(TestCase):
    """``--resume`` of a run already at ``max_iters`` stops at once."""

    def test_resume_at_or_beyond_max_iters_is_one_line(self):
        from oaml_mm.errors import ConfigError
        with tempfile.TemporaryDirectory() as work:
            def build(max_iters, resume):
                cfg = toy_config(work)
                cfg['train_cfg'] = dict(by_epoch=False, max_iters=max_iters,
                                        val_interval=100)
                cfg['default_hooks']['checkpoint'] = dict(
                    type='CheckpointHook', interval=4, by_epoch=False)
                cfg['resume'] = resume
                cfg = Config(cfg)
                cfg.experiment_name = f'past_{max_iters}_{resume}'
                return RUNNERS.build(cfg)

            build(8, False).train()
            for max_iters in (8, 6):
                with self.subTest(max_iters=max_iters):
                    runner = build(max_iters, True)
                    skipped = []
                    real_next = runner.train_loop.dataloader_iterator.__class__
                    with mock.patch.object(
                            real_next, '__next__',
                            side_effect=lambda *a: skipped.append(1)):
                        with self.assertRaisesRegex(
                                ConfigError,
                                rf'^resumed at iteration 8, but '
                                rf'train_cfg\.max_iters is {max_iters}: nothing '
                                r'is left to train'):
                            runner.train()
                    # Stopped before fast-forwarding the dataloader.
                    self.assertEqual(skipped, [])
