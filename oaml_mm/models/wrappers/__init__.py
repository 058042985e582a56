from .guarded_ddp import GuardedDistributedDataParallel

__all__ = ['GuardedDistributedDataParallel']
