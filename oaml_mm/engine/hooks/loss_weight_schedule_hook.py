"""Loss-weight schedule: move a recognizer's branch weight linearly over training.

OAML's AdaFace : QAConv split is fixed in the model config. The occlusion study
(docs/occlusion_study.md) found that a split chosen at a short budget (0.1 : 0.9 at
500 iterations) starves the AdaFace branch at longer ones. This hook ramps one
weight (``adaface`` by default) from ``start`` to ``end`` between two fractions of
the run and gives the complement (``qaconv``) ``total - weight``, so the early
iterations train the feature maps through QAConv and the later ones the embedding
(docs/models.md, "Loss-split schedule").
"""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from oaml_mm.errors import ConfigError
from oaml_mm.registry import HOOKS

__all__ = ['LossWeightScheduleHook']


@HOOKS.register_module()
class LossWeightScheduleHook(Hook):
    """Set ``model.loss_weights[key]`` on a linear ramp before every iteration.

    ``w(t) = start + (end - start) * clip((t - begin) / (stop - begin), 0, 1)`` with
    ``t = iter / max_iters``; ``model.loss_weights[complement] = total - w(t)``
    when ``complement`` is set (``total`` defaults to the two weights' sum in the
    config). Computed from the runner's iteration, so a resumed run continues the
    ramp; the configured weights are restored after training (so a checkpoint
    saved at the end holds the config's values).

    Example::

        # AdaFace : QAConv from 0.1 : 0.9 to 0.5 : 0.5 over the whole run.
        custom_hooks = [dict(type='LossWeightScheduleHook', key='adaface',
                             start=0.1, end=0.5, complement='qaconv')]

    Args:
        key (str): Weight to ramp (a key of ``OAMLRecognizer.loss_weights``).
            Defaults to ``'adaface'``.
        start (float): Weight at ``begin_ratio``. Defaults to 0.1.
        end (float): Weight from ``end_ratio`` on. Defaults to 0.5.
        begin_ratio (float): Fraction of the run where the ramp starts.
            Defaults to 0.0.
        end_ratio (float): Fraction of the run where it ends. Defaults to 1.0.
        complement (str, optional): Weight set to ``total - w`` (``'qaconv'``
            by default); None leaves the other weights alone.
        total (float, optional): Sum kept by ``complement``; None: the sum of the
            two configured weights.

    Raises:
        ConfigError: Negative weights, ratios outside [0, 1] or not increasing,
            a ``total`` below ``max(start, end)``, or (at training start) a model
            without ``loss_weights[key]``.
    """

    priority = 'NORMAL'

    def __init__(self, key: str = 'adaface', start: float = 0.1,
                 end: float = 0.5, begin_ratio: float = 0.0,
                 end_ratio: float = 1.0, complement: Optional[str] = 'qaconv',
                 total: Optional[float] = None) -> None:
        if start < 0 or end < 0:
            raise ConfigError(
                f'LossWeightScheduleHook: start and end must be >= 0, got '
                f'{start}, {end}')
        if not 0.0 <= begin_ratio < end_ratio <= 1.0:
            raise ConfigError(
                'LossWeightScheduleHook: need 0 <= begin_ratio < end_ratio <= 1, '
                f'got {begin_ratio}, {end_ratio}')
        if total is not None and total < max(start, end):
            raise ConfigError(
                f'LossWeightScheduleHook: total={total} is below the ramp '
                f'({start} -> {end}); the complement would turn negative')
        self.key, self.complement = key, complement
        self.start, self.end = float(start), float(end)
        self.begin_ratio, self.end_ratio = float(begin_ratio), float(end_ratio)
        self.total = total
        self._saved: Optional[dict] = None

    def weight(self, cur_iter: int, max_iters: int) -> float:
        """The ramped weight at iteration ``cur_iter`` (0-based) of ``max_iters``."""
        t = cur_iter / max(1, max_iters)
        f = (t - self.begin_ratio) / (self.end_ratio - self.begin_ratio)
        f = min(1.0, max(0.0, f))
        return self.start + (self.end - self.start) * f

    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(
            runner.model) else runner.model

    def before_train(self, runner) -> None:
        weights = getattr(self._model(runner), 'loss_weights', None)
        keys = [self.key] + ([self.complement] if self.complement else [])
        if not isinstance(weights, dict) or any(k not in weights for k in keys):
            raise ConfigError(
                f'LossWeightScheduleHook: the model has no loss_weights '
                f'{keys} (an OAMLRecognizer has adaface, qaconv, occlusion)')
        self._saved = dict(weights)
        if self.total is None and self.complement:
            total = weights[self.key] + weights[self.complement]
            if total < max(self.start, self.end):
                raise ConfigError(
                    f'LossWeightScheduleHook: {self.key} + {self.complement} = '
                    f'{total} in the config is below the ramp ({self.start} -> '
                    f'{self.end}); set total')
            self.total = total

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        w = self.weight(runner.iter, runner.max_iters)
        weights = self._model(runner).loss_weights
        weights[self.key] = w
        if self.complement:
            weights[self.complement] = self.total - w
        runner.message_hub.update_scalar(f'train/weight_{self.key}', w)

    def after_train(self, runner) -> None:
        if self._saved is not None:
            self._model(runner).loss_weights.update(self._saved)
