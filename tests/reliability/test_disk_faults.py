"""Faults: unwritable work dir, no room for a checkpoint, disk full mid-write, two
runs on one work dir."""
import errno
import os
import os.path as osp
import socket
from unittest import mock

from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.testing import RunnerTestCase

from oaml_mm.engine.runner import atomic_backend, oaml_runner
from oaml_mm.engine.runner.oaml_runner import (check_work_dir,
                                               find_resumable_checkpoint)
from oaml_mm.engine.runner.work_dir_lock import WorkDirLock, launcher_rank
from oaml_mm.errors import WorkDirError
from oaml_mm.registry import RUNNERS
from oaml_mm.utils import safe_load_checkpoint
from tests.reliability._util import train
from tests.toy_components import Interrupt, toy_config, write_toy_config_file


class _DiskFullOnSave(Hook):
    """Make the ``n``-th checkpoint write fail with ENOSPC inside the backend."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.saves = 0

    def before_save_checkpoint(self, runner, checkpoint):
        self.saves += 1
        if self.saves == self.n:
            def enospc(fd):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.patch = mock.patch.object(atomic_backend.os, 'fsync', enospc)
            self.patch.start()


class TestDiskFaults(RunnerTestCase):

    def build(self, cfg):
        cfg = Config(cfg)
        cfg.experiment_name = self.experiment_name
        return RUNNERS.build(cfg)

    def test_work_dir_under_a_file_fails_before_training(self):
        blocker = osp.join(self.temp_dir.name, 'a_file')
        open(blocker, 'w').close()
        with self.assertRaisesRegex(WorkDirError, 'cannot create the work'):
            self.build(toy_config(osp.join(blocker, 'work')))

    def test_unwritable_work_dir_fails_before_training(self):
        # Tests may run as root, for whom chmod does not stop writes: refuse the
        # probe write instead, as a read-only mount would.
        work = osp.join(self.temp_dir.name, 'ro')
        os.makedirs(work)

        def refuse(*args, **kwargs):
            raise PermissionError(errno.EROFS, os.strerror(errno.EROFS))

        with mock.patch.object(oaml_runner.tempfile, 'mkstemp', refuse):
            with self.assertRaisesRegex(WorkDirError,
                                        'ro: the work directory is not '
                                        'writable .Read-only file system'):
                self.build(toy_config(work))
        self.assertEqual(os.listdir(work), [])

    def test_no_room_for_a_checkpoint_fails_before_training(self):
        work = osp.join(self.temp_dir.name, 'full')
        runner = self.build(toy_config(work))
        usage = mock.Mock(free=4096)
        with mock.patch.object(oaml_runner.shutil, 'disk_usage',
                               return_value=usage):
            with self.assertRaisesRegex(WorkDirError,
                                        r'0\.0 MiB free, but a checkpoint'):
                runner.train()
        self.assertFalse(osp.exists(osp.join(work, 'losses-rank0.jsonl')))
        check_work_dir(work, need_bytes=1)  # real disk: passes

    def test_disk_full_mid_write_keeps_previous_checkpoint(self):
        work = osp.join(self.temp_dir.name, 'enospc')
        cfg = toy_config(work)
        # One checkpoint kept: mmengine's own hook would delete epoch_1.pth before
        # writing epoch_2.pth and be left with nothing.
        cfg['default_hooks']['checkpoint']['max_keep_ckpts'] = 1
        runner = self.build(cfg)
        hook = _DiskFullOnSave(n=2)
        runner.register_hook(hook)
        try:
            with self.assertRaises(WorkDirError) as ctx:
                runner.train()
        finally:
            hook.patch.stop()
        self.assertEqual(ctx.exception.errno, errno.ENOSPC)
        self.assertIn('epoch_2.pth: cannot write', str(ctx.exception))
        self.assertIn('No space left on device', str(ctx.exception))
        files = sorted(os.listdir(work))
        self.assertIn('epoch_1.pth', files)
        self.assertNotIn('epoch_2.pth', files)
        self.assertFalse([f for f in files if f.endswith('.tmp')], files)
        ckpt = safe_load_checkpoint(osp.join(work, 'epoch_1.pth'))
        self.assertEqual(ckpt['meta']['epoch'], 1)
        path, rejected = find_resumable_checkpoint(work)
        self.assertEqual(path, osp.join(work, 'epoch_1.pth'))
        self.assertEqual(rejected, [])

    def test_pruning_happens_after_the_save(self):
        work = osp.join(self.temp_dir.name, 'keep')
        cfg = toy_config(work)
        cfg['default_hooks']['checkpoint']['max_keep_ckpts'] = 2
        runner = self.build(cfg)
        runner.train()
        files = sorted(f for f in os.listdir(work) if f.endswith('.pth'))
        self.assertEqual(files, ['epoch_2.pth', 'epoch_3.pth'])
        self.assertEqual(runner.message_hub.get_info('keep_ckpt_ids'), [2, 3])
        self.assertEqual(
            [type(h).__name__ for h in runner.hooks
             if 'Checkpoint' in type(h).__name__],
            ['OAMLCheckpointHook', 'SafeCheckpointHook'])

    def test_resumed_run_prunes_like_an_uninterrupted_one(self):
        work = osp.join(self.temp_dir.name, 'resumed')
        cfg = toy_config(work, extra_hooks=[
            dict(type='InterruptHook', at_iter=13)])  # after epoch_2.pth
        cfg['default_hooks']['checkpoint']['max_keep_ckpts'] = 1
        with self.assertRaises(Interrupt):
            self.build(cfg).train()
        self.assertEqual(
            sorted(f for f in os.listdir(work) if f.endswith('.pth')),
            ['epoch_2.pth'])
        # The checkpoint lists its own file among those to keep.
        ckpt = safe_load_checkpoint(osp.join(work, 'epoch_2.pth'))
        self.assertEqual(
            ckpt['message_hub']['runtime_info']['keep_ckpt_ids'], [2])
        cfg = toy_config(work)
        cfg['default_hooks']['checkpoint']['max_keep_ckpts'] = 1
        cfg['resume'] = True
        runner = self.build(cfg)
        runner.train()
        self.assertEqual(
            sorted(f for f in os.listdir(work) if f.endswith('.pth')),
            ['epoch_3.pth'])
        self.assertEqual(runner.message_hub.get_info('keep_ckpt_ids'), [3])

    def test_tools_train_reports_unwritable_work_dir(self):
        blocker = osp.join(self.temp_dir.name, 'a_file')
        open(blocker, 'w').close()
        cfg_path = write_toy_config_file(
            osp.join(self.temp_dir.name, 'toy.py'), osp.join(blocker, 'w'))
        proc = train(cfg_path)
        self.assertEqual(proc.returncode, 1)
        self.assertIn('WorkDirError: ', proc.stderr)
        self.assertIn('cannot create the work directory', proc.stderr)
        self.assertNotIn('Traceback', proc.stderr)


def _snapshot(folder: str) -> dict:
    """{relative path: bytes (None for a folder)} of everything under ``folder``."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            out[osp.relpath(osp.join(root, d), folder)] = None
        for name in files:
            with open(osp.join(root, name), 'rb') as f:
                out[osp.relpath(osp.join(root, name), folder)] = f.read()
    return out


class TestWorkDirLock(RunnerTestCase):
    """Two runs on one work dir: the second refuses and names the first."""

    def build(self, cfg):
        cfg = Config(cfg)
        cfg.experiment_name = self.experiment_name
        return RUNNERS.build(cfg)

    def test_second_run_refuses_and_leaves_the_first_runs_files(self):
        work = osp.join(self.temp_dir.name, 'shared')
        os.makedirs(work)
        # The first run, mid-write of a checkpoint.
        first = WorkDirLock(work)
        first.acquire()
        in_progress = osp.join(work, 'epoch_2.pth.abc123.tmp')
        open(in_progress, 'wb').close()
        try:
            cfg_path = write_toy_config_file(
                osp.join(self.temp_dir.name, 'toy.py'), work)
            proc = train(cfg_path)
            self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
            self.assertNotIn('Traceback', proc.stderr)
            line = proc.stderr.strip().splitlines()[-1]
            self.assertTrue(line.startswith(
                f'WorkDirError: {work}: another training run is using this '
                f'work directory (pid {os.getpid()} on host '
                f'{socket.gethostname()}, started '), line)
            self.assertIn('choose another folder with --work-dir', line)
            self.assertTrue(osp.exists(in_progress))
            # In the same process too (a second runner on the same folder).
            with self.assertRaisesRegex(WorkDirError, 'another training run'):
                self.build(toy_config(work, max_epochs=1)).train()
            self.assertTrue(osp.exists(in_progress))
        finally:
            first.release()
        # Once the first run is gone the folder is free again.
        self.build(toy_config(work, max_epochs=1)).train()
        self.assertFalse(osp.exists(in_progress))

    def test_refused_run_writes_nothing_into_the_work_dir(self):
        work = osp.join(self.temp_dir.name, 'busy')
        os.makedirs(work)
        os.makedirs(osp.join(self.temp_dir.name, 'other'))
        # The first run's files: its dumped config and its log folder.
        first_cfg = write_toy_config_file(osp.join(work, 'toy.py'), work)
        os.makedirs(osp.join(work, '20260101_000000'))
        with open(osp.join(work, '20260101_000000', 'log.txt'), 'w') as f:
            f.write('first run\n')
        first = WorkDirLock(work)
        first.acquire()
        try:
            before = _snapshot(work)
            # Same config name, another learning rate: mmengine would dump it
            # over the first run's toy.py and add a timestamp folder.
            other = write_toy_config_file(
                osp.join(self.temp_dir.name, 'other', 'toy.py'), work)
            proc = train(other, '--cfg-options',
                         'optim_wrapper.optimizer.lr=0.5')
            self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
            self.assertNotIn('Traceback', proc.stderr)
            self.assertIn('another training run is using this work directory',
                          proc.stderr.strip().splitlines()[-1])
            self.assertEqual(_snapshot(work), before)
            # A config of another name would have added a second .py there.
            third = write_toy_config_file(
                osp.join(self.temp_dir.name, 'toy_lr2.py'), work)
            proc = train(third)
            self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
            self.assertEqual(_snapshot(work), before)
        finally:
            first.release()
        self.assertTrue(osp.isfile(first_cfg))
        # Free again: tools/train.py trains there and gives the lock back.
        proc = train(other, '--cfg-options', 'train_cfg.max_epochs=1')
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        self.assertFalse(osp.exists(first.owner_path))
        lock = WorkDirLock(work)
        lock.acquire()
        lock.release()

    def test_lock_path_that_is_a_folder_is_one_line(self):
        work = osp.join(self.temp_dir.name, 'dirlock')
        os.makedirs(osp.join(work, '.oaml_train.lock'))
        with self.assertRaisesRegex(
                WorkDirError, r"\.oaml_train\.lock: cannot take the work "
                r"directory's lock file .*expected a regular file"):
            WorkDirLock(work).acquire()
        cfg_path = write_toy_config_file(
            osp.join(self.temp_dir.name, 'toy.py'), work)
        proc = train(cfg_path)
        self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
        self.assertNotIn('Traceback', proc.stderr)
        self.assertIn("cannot take the work directory's lock file",
                      proc.stderr.strip().splitlines()[-1])

    def test_owner_file_is_never_written_through_a_symlink(self):
        work = osp.join(self.temp_dir.name, 'symlock')
        os.makedirs(work)
        victim = osp.join(self.temp_dir.name, 'victim.txt')
        with open(victim, 'w') as f:
            f.write('precious\n')
        os.symlink(victim, osp.join(work, '.oaml_train.lock.owner'))
        lock = WorkDirLock(work)
        lock.acquire()
        try:
            with open(victim) as f:
                self.assertEqual(f.read(), 'precious\n')
            self.assertFalse(osp.islink(lock.owner_path))
            self.assertIn(f'pid {os.getpid()}', lock.holder())
        finally:
            lock.release()
        with open(victim) as f:
            self.assertEqual(f.read(), 'precious\n')

    def test_checkpoints_follow_the_umask(self):
        work = osp.join(self.temp_dir.name, 'umask')
        old = os.umask(0o022)
        try:
            self.build(toy_config(work, max_epochs=1)).train()
        finally:
            os.umask(old)
        self.assertEqual(os.stat(osp.join(work, 'epoch_1.pth')).st_mode & 0o777,
                         0o644)

    def test_launcher_rank_read_before_the_process_group(self):
        env = {'RANK': '3', 'SLURM_PROCID': '5', 'OMPI_COMM_WORLD_RANK': '7'}
        with mock.patch.dict(os.environ, env):
            self.assertEqual([launcher_rank(k) for k in
                              ('none', 'pytorch', 'slurm', 'mpi')],
                             [0, 3, 5, 7])
        with mock.patch.dict(os.environ, {'RANK': 'x'}):
            self.assertEqual(launcher_rank('pytorch'), 0)
        with mock.patch.dict(os.environ, {}, clear=True):
            self.assertEqual(launcher_rank('pytorch'), 0)

    def test_lock_is_released_when_a_run_ends_or_fails(self):
        work = osp.join(self.temp_dir.name, 'w')
        self.build(toy_config(work, max_epochs=1)).train()
        with self.assertRaises(Interrupt):
            self.build(toy_config(work, max_epochs=2, extra_hooks=[
                dict(type='InterruptHook', at_iter=2)])).train()
        lock = WorkDirLock(work)
        lock.acquire()
        self.assertTrue(lock.is_locked)
        lock.release()
        self.assertFalse(osp.exists(lock.owner_path))
