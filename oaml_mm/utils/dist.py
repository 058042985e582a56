"""Distributed helpers: ending a job cleanly, and tensors sharded over the ranks."""
import ctypes
import os
import signal
import sys
from typing import Optional, Tuple

import torch
import torch.distributed as dist

__all__ = [
    'close_process_group', 'exit_with_launcher', 'dist_info', 'shard_range',
    'gather_shards'
]

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


def dist_info() -> Tuple[int, int]:
    """``(rank, world_size)`` of the default process group; ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_range(total: int, world_size: int, rank: int) -> Tuple[int, int]:
    """The slice ``[start, end)`` of ``total`` items that rank ``rank`` holds.

    The first ``total % world_size`` ranks hold one item more than the others
    (e.g. the class centres of :class:`~oaml_mm.models.heads.PartialFCHead`).

    Args:
        total (int): Number of items (e.g. identities).
        world_size (int): Number of ranks W (>= 1).
        rank (int): In ``[0, W)``.

    Returns:
        tuple[int, int]: ``start`` and ``end`` (exclusive).

    Examples:
        >>> [shard_range(10, 3, r) for r in range(3)]
        [(0, 4), (4, 7), (7, 10)]
    """
    base, extra = divmod(total, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def gather_shards(shard: torch.Tensor, total: int, dim: int,
                  dst: Optional[int] = 0) -> Optional[torch.Tensor]:
    """Collective: concatenate every rank's :func:`shard_range` slice along ``dim``.

    Args:
        shard (Tensor): This rank's slice; its size along ``dim`` is
            ``shard_range(total, W, rank)``'s length.
        total (int): Size of the whole tensor along ``dim``.
        dim (int): The sharded dimension.
        dst (int, optional): Only this rank receives the result (the others
            get None); None: every rank does.

    Returns:
        Tensor | None: The whole tensor, on CPU.
    """
    rank, world = dist_info()
    if world == 1:
        return shard.detach().cpu()
    lengths = [shard_range(total, world, r) for r in range(world)]
    most = max(e - s for s, e in lengths)
    shape = list(shard.shape)
    shape[dim] = most
    padded = shard.new_zeros(shape)
    padded.narrow(dim, 0, shard.shape[dim]).copy_(shard)
    if dst is None:
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
    else:
        parts = [torch.empty_like(padded)
                 for _ in range(world)] if rank == dst else None
        dist.gather(padded, parts, dst=dst)
        if rank != dst:
            return None
    return torch.cat([p.narrow(dim, 0, e - s).cpu()
                      for p, (s, e) in zip(parts, lengths)], dim=dim)
