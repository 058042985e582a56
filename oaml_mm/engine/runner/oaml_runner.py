"""The oaml_mm runner: mmengine's Runner with safe checkpoints and CPU DDP.

Differences from :class:`mmengine.runner.Runner`:

* checkpoints are written atomically and load with ``torch.load(weights_only=True)``
  (it adds :class:`~oaml_mm.engine.hooks.SafeCheckpointHook`);
* ``--resume`` restores the random generator states, so the resumed losses equal those
  of an uninterrupted run;
* distributed training works on CPU-only machines: the gloo process group is created
  here when CUDA is absent (mmengine's launcher assumes a GPU per process), and the
  model is wrapped without ``device_ids``.

Select it in a config with ``runner_type = 'OAMLRunner'`` (the default runtime does).
"""
import os
from typing import Optional

import torch
import torch.distributed as dist
from mmengine.runner import Runner

from oaml_mm.engine.hooks.safe_checkpoint_hook import (SafeCheckpointHook,
                                                       set_rng_state)
from oaml_mm.registry import RUNNERS

__all__ = ['OAMLRunner', 'init_cpu_distributed']


def init_cpu_distributed(timeout_s: int = 1800) -> bool:
    """Create a gloo process group from torchrun's environment when CUDA is absent.

    Args:
        timeout_s (int): Collective timeout in seconds.

    Returns:
        bool: True if a process group was created here.
    """
    if dist.is_initialized() or torch.cuda.is_available():
        return False
    if 'RANK' not in os.environ or 'WORLD_SIZE' not in os.environ:
        return False
    import datetime
    dist.init_process_group(
        backend='gloo', timeout=datetime.timedelta(seconds=timeout_s))
    return True


@RUNNERS.register_module()
class OAMLRunner(Runner):
    """Runner with weights-only checkpoints, exact resume and CPU DDP.

    Accepts every argument of :class:`mmengine.runner.Runner`.
    """

    def __init__(self, *args, **kwargs) -> None:
        launcher = kwargs.get('launcher', 'none')
        if launcher == 'pytorch':
            env_cfg = kwargs.get('env_cfg') or {}
            timeout = (env_cfg.get('dist_cfg') or {}).get('timeout', 1800)
            init_cpu_distributed(timeout)
        super().__init__(*args, **kwargs)

    @classmethod
    def from_cfg(cls, cfg) -> 'OAMLRunner':
        cfg = cfg.copy()
        if cfg.get('launcher', 'none') == 'pytorch' and \
                not torch.cuda.is_available():
            env_cfg = cfg.setdefault('env_cfg', {})
            env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
        return super().from_cfg(cfg)

    def register_hooks(self, default_hooks=None, custom_hooks=None) -> None:
        super().register_hooks(default_hooks, custom_hooks)
        if not any(isinstance(h, SafeCheckpointHook) for h in self._hooks):
            self.register_hook(SafeCheckpointHook())

    def _safe_hook(self) -> Optional[SafeCheckpointHook]:
        for hook in self._hooks:
            if isinstance(hook, SafeCheckpointHook):
                return hook
        return None

    def save_checkpoint(self, out_dir, filename, file_client_args=None,
                        *args, backend_args=None, **kwargs) -> None:
        if file_client_args is None and backend_args is None and \
                '://' not in str(out_dir):
            backend_args = dict(backend='atomic_local')
        super().save_checkpoint(out_dir, filename, file_client_args, *args,
                                backend_args=backend_args, **kwargs)

    def resume(self, filename: str, resume_optimizer: bool = True,
               resume_param_scheduler: bool = True,
               map_location='default') -> None:
        super().resume(filename, resume_optimizer, resume_param_scheduler,
                       map_location)
        hook = self._safe_hook()
        # Restored last: mmengine's resume may reseed when the seeds differ.
        if hook is not None and hook.loaded_rng_state is not None:
            set_rng_state(hook.loaded_rng_state)
            hook.loaded_rng_state = None

    def wrap_model(self, model_wrapper_cfg: Optional[dict], model):
        if self.distributed and not torch.cuda.is_available():
            model_wrapper_cfg = dict(model_wrapper_cfg or {})
            model_wrapper_cfg.setdefault('type', 'MMDistributedDataParallel')
            model_wrapper_cfg.setdefault('broadcast_buffers', False)
            model_wrapper_cfg.setdefault(
                'find_unused_parameters',
                self.cfg.get('find_unused_parameters', False))
            # CPU modules take no device ids (mmengine passes LOCAL_RANK).
            model_wrapper_cfg['device_ids'] = None
        return super().wrap_model(model_wrapper_cfg, model)
