"""Ending a distributed job cleanly."""
import torch.distributed as dist

__all__ = ['close_process_group']


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
