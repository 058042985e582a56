"""DDP wrapper that keeps the model's non-finite update guard.

mmengine's :class:`~mmengine.model.MMDistributedDataParallel` implements ``train_step``
itself (forward through DDP, then ``optim_wrapper.update_params``) and never calls the
wrapped model's ``train_step``, so a model's own update logic is bypassed under DDP.
This wrapper runs the forward pass through DDP (the gradient all-reduce needs it) and
hands the update to the model's ``guarded_update`` when it has one.
"""
from typing import Dict, Union

import torch
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import OptimWrapper

from oaml_mm.registry import MODEL_WRAPPERS

__all__ = ['GuardedDistributedDataParallel']


@MODEL_WRAPPERS.register_module()
class GuardedDistributedDataParallel(MMDistributedDataParallel):
    """:class:`MMDistributedDataParallel` that delegates updates to the model.

    :class:`~oaml_mm.engine.runner.OAMLRunner` uses it by default; in a config::

        model_wrapper_cfg = dict(type='GuardedDistributedDataParallel',
                                 find_unused_parameters=True)

    Models without ``guarded_update(optim_wrapper, losses, snapshot)`` train exactly
    as under :class:`MMDistributedDataParallel`.
    """

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapper) -> Dict[str, torch.Tensor]:
        module = self.module
        if not hasattr(module, 'guarded_update'):
            return super().train_step(data, optim_wrapper)
        snapshot = module.buffer_snapshot()
        with optim_wrapper.optim_context(self):
            data = module.data_preprocessor(data, training=True)
            losses = self._run_forward(data, mode='loss')
        return module.guarded_update(optim_wrapper, losses, snapshot)
