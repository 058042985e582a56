"""One training run per work directory.

Two runs writing checkpoints into one folder destroy each other's work: the second
removes the first's in-progress temporary checkpoint as a leftover of a crash, and
both prune and overwrite ``last_checkpoint``. :class:`WorkDirLock` takes an exclusive
lock on ``work_dir/.oaml_train.lock`` with the `filelock` library
(https://py-filelock.readthedocs.io/, an OS-level ``flock``: the kernel releases it
when the holder exits, even on SIGKILL, so a crashed run never blocks its
``--resume``) and writes who holds it to ``.oaml_train.lock.owner`` beside it
(never through a symbolic link placed there).
"""
import datetime
import os
import os.path as osp
import socket
import sys
from typing import Optional

from filelock import FileLock, Timeout

from oaml_mm.errors import WorkDirError

__all__ = ['WorkDirLock', 'LOCK_NAME', 'launcher_rank']

#: The lock file's name inside the work directory.
LOCK_NAME = '.oaml_train.lock'


#: The environment variable each launcher sets to a process's global rank before
#: the process group exists (torchrun, Slurm's srun, Open MPI's mpirun).
_RANK_ENV = {'pytorch': 'RANK', 'slurm': 'SLURM_PROCID',
             'mpi': 'OMPI_COMM_WORLD_RANK'}


def launcher_rank(launcher: str = 'none') -> int:
    """This process's global rank as its launcher announced it (0 when alone).

    Read from the environment, so it is known before the process group is
    created (the work dir lock is taken before the runner is built).

    Args:
        launcher (str): ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.

    Returns:
        int: The rank, 0 for ``'none'`` or when the variable is unset.
    """
    name = _RANK_ENV.get(launcher)
    try:
        return int(os.environ.get(name, 0)) if name else 0
    except ValueError:
        return 0


class WorkDirLock:
    """Exclusive, non-blocking lock of a work directory for one training run.

    Args:
        work_dir (str): The run's work directory (must exist).

    Example:
        >>> lock = WorkDirLock('work_dirs/x')  # doctest: +SKIP
        >>> lock.acquire()                      # WorkDirError if another run holds it
        >>> ...                                 # train
        >>> lock.release()
    """

    def __init__(self, work_dir: str) -> None:
        self.work_dir = str(work_dir)
        self.path = osp.join(self.work_dir, LOCK_NAME)
        self.owner_path = self.path + '.owner'
        self._lock: Optional[FileLock] = None

    def holder(self) -> str:
        """What the owner file says about the current holder ('' if unknown)."""
        try:
            with open(self.owner_path, encoding='utf-8', errors='replace') as f:
                return ' '.join(f.read().split())
        except OSError:
            return ''

    def acquire(self) -> None:
        """Take the lock now or fail.

        Raises:
            WorkDirError: Another run (named by its pid, host, start time and
                command) holds the lock.
        """
        # thread_local=False: the lock belongs to the run, not to one thread;
        # is_singleton=False: a second runner in this process must be refused.
        lock = FileLock(self.path, timeout=0, thread_local=False,
                        is_singleton=False)
        try:
            lock.acquire()
        except Timeout:
            who = self.holder() or 'a process whose details were not recorded'
            raise WorkDirError(
                f'{self.work_dir}: another training run is using this work '
                f'directory ({who}); wait for it to finish or stop it, or '
                'choose another folder with --work-dir') from None
        except OSError as e:  # after Timeout, itself an OSError
            raise WorkDirError(
                f'{self.path}: cannot take the work directory\'s lock file '
                f'({e.strerror or e}); expected a regular file there (remove '
                'what is in its place)') from None
        self._lock = lock
        started = datetime.datetime.now().astimezone().isoformat(
            timespec='seconds')
        text = (f'pid {os.getpid()} on host {socket.gethostname()}, '
                f'started {started}: {" ".join(sys.argv)}\n')
        try:
            # Never through a symbolic link (it could point at any file the
            # user can write): the link itself is replaced.
            if osp.islink(self.owner_path):
                os.remove(self.owner_path)
            fd = os.open(self.owner_path, os.O_WRONLY | os.O_CREAT |
                         os.O_TRUNC | getattr(os, 'O_NOFOLLOW', 0), 0o666)
            with os.fdopen(fd, 'w', encoding='utf-8') as f:
                f.write(text)
        except OSError as e:
            # The lock is held; only the note on who holds it is missing.
            from mmengine.logging import print_log
            print_log(f'{self.owner_path}: cannot record the lock holder '
                      f'({e.strerror or e})', logger='current', level=30)

    def release(self) -> None:
        """Give the lock up (a no-op when not held)."""
        if self._lock is None:
            return
        try:
            os.remove(self.owner_path)
        except OSError:
            pass
        self._lock.release()
        self._lock = None

    @property
    def is_locked(self) -> bool:
        """Whether this object holds the lock."""
        return self._lock is not None and self._lock.is_locked
