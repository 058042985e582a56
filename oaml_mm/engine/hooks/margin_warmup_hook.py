"""Margin warm-up: ramp the margin of margin softmax heads from 0 to its value.

The CPU feasibility study (docs/synthface.md) found that AdaFace at s=64, m=0.4 learns
slowly on small data and that ramping m from 0 over the first 30% of the iterations
helped; a margin-free softmax first finds the class directions, then the margin tightens
them.
"""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from oaml_mm.errors import ConfigError
from oaml_mm.registry import HOOKS

__all__ = ['MarginWarmupHook']


@HOOKS.register_module()
class MarginWarmupHook(Hook):
    """Scale every margin head's margin by ``min(1, iter / (ratio * max_iters))``.

    Acts on each submodule of the model that has ``set_margin_scale`` (AdaFaceHead,
    ArcFaceHead, CosFaceHead). The factor is computed from the runner's iteration, so
    a resumed run continues the ramp where it stopped.

    Example::

        custom_hooks = [dict(type='MarginWarmupHook', warmup_ratio=0.3)]

    Args:
        warmup_ratio (float): Fraction of the training iterations the ramp lasts.
            Defaults to 0.3.
        warmup_iters (int, optional): Ramp length in iterations; overrides
            ``warmup_ratio``.
    """

    priority = 'NORMAL'

    def __init__(self, warmup_ratio: float = 0.3,
                 warmup_iters: Optional[int] = None) -> None:
        if not 0 <= warmup_ratio <= 1:
            raise ConfigError(
                f'MarginWarmupHook: warmup_ratio must be in [0, 1], got '
                f'{warmup_ratio}')
        if warmup_iters is not None and warmup_iters < 0:
            raise ConfigError('MarginWarmupHook: warmup_iters must be >= 0')
        self.warmup_ratio = warmup_ratio
        self.warmup_iters = warmup_iters

    def factor(self, cur_iter: int, max_iters: int) -> float:
        """Margin scale at iteration ``cur_iter`` (0-based)."""
        length = self.warmup_iters if self.warmup_iters is not None else \
            self.warmup_ratio * max_iters
        if length <= 0:
            return 1.0
        return min(1.0, cur_iter / length)

    @staticmethod
    def _heads(runner):
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        return [m for m in model.modules() if hasattr(m, 'set_margin_scale')]

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        f = self.factor(runner.iter, runner.max_iters)
        for head in self._heads(runner):
            head.set_margin_scale(f)
        runner.message_hub.update_scalar('train/margin_scale', f)

    def after_train(self, runner) -> None:
        for head in self._heads(runner):
            head.set_margin_scale(1.0)
