"""bfloat16 autocast for CPU training.

mmengine's ``AmpOptimWrapper`` is fp16 AMP with a loss scaler and refuses to run without
a GPU; CPU autocast supports bfloat16 only. bf16 has fp32's exponent range, so no loss
scaling is needed: this wrapper only opens an autocast context around the forward pass.
"""
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper

from oaml_mm.registry import OPTIM_WRAPPERS

__all__ = ['BF16AutocastOptimWrapper']


@OPTIM_WRAPPERS.register_module()
class BF16AutocastOptimWrapper(OptimWrapper):
    """Optimizer wrapper that runs the forward pass under bfloat16 autocast.

    ``tools/train.py --amp`` selects it on machines without CUDA::

        optim_wrapper = dict(type='BF16AutocastOptimWrapper',
                             optimizer=dict(type='SGD', lr=0.1, momentum=0.9))

    Args:
        device_type (str): ``'cpu'`` or ``'cuda'``. Defaults to ``'cpu'``.
        **kwargs: Arguments of :class:`mmengine.optim.OptimWrapper`.
    """

    def __init__(self, device_type: str = 'cpu', **kwargs) -> None:
        super().__init__(**kwargs)
        self.device_type = device_type

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast(
                device_type=self.device_type, dtype=torch.bfloat16):
            yield
