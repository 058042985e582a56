"""Ending a distributed job cleanly."""
import ctypes
import os
import signal
import sys

import torch.distributed as dist

__all__ = ['close_process_group', 'exit_with_launcher']

#: prctl(2) option: the signal this process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def exit_with_launcher(sig: int = signal.SIGKILL) -> bool:
    """Have Linux end this process when its launcher (the parent process) dies.

    ``torchrun`` (``tools/dist_train.sh``) starts one process per rank. When the
    launcher is killed with a signal it cannot catch (``kill -9``, an out-of-memory
    kill), nothing tells the ranks, and they train on. ``tools/train.py`` and
    ``tools/test.py`` call this under ``--launcher pytorch``: the kernel then sends
    ``sig`` to the rank as soon as its parent exits (``prctl(PR_SET_PDEATHSIG)``), and
    a rank whose launcher is already gone exits at once. Checkpoints are written
    atomically, so a killed rank leaves the last complete one (docs/reliability.md).

    Args:
        sig (int): Signal to receive. Defaults to ``SIGKILL`` (a rank inside a
            collective would not act on a catchable one).

    Returns:
        bool: True if the request was made (Linux), False elsewhere.
    """
    if not sys.platform.startswith('linux'):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if os.getppid() == 1:
        # The launcher died before the request: init adopted this process.
        os.kill(os.getpid(), sig)
    return True


def close_process_group() -> None:
    """Wait for every rank, then destroy the default process group (if any).

    A process that exits with the group still up leaves gloo's threads to the
    interpreter's shutdown, which can abort the process ("terminate called without
    an active exception", exit code -6) after all its work is done, and torchrun
    then reports the whole job as failed. The tools call this at their end; rank 0
    may still be writing reports, hence the barrier first.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
