"""Skip optimizer updates whose loss or gradients are not finite.

One NaN or Inf that reaches ``optimizer.step`` poisons every weight it touches (SGD
momentum and Adam moments keep it forever), and the run then trains on for days
producing nothing. Large-scale trainers therefore check the loss and the gradients
before stepping and skip the update (fairseq's ``FloatingPointError`` handling,
DeepSpeed/apex's dynamic loss scaler ``overflow`` skip), aborting when it keeps
happening.

mmengine routes every update through the optimizer wrapper: ``BaseModel.train_step``
and ``MMDistributedDataParallel.train_step`` both run the forward pass inside
``optim_wrapper.optim_context(model)`` and then call
``optim_wrapper.update_params(loss)``. :class:`GuardedOptimWrapper` puts the rule in
those two calls, so one wrapper guards single-process and DDP training alike, for any
model:

* ``optim_context`` copies the model's buffers before the forward pass (BatchNorm
  running statistics and ``num_batches_tracked``, AdaFace's norm EMA: kilobytes next to
  the weights), because a non-finite batch has already poisoned them by the time its
  loss is known;
* a non-finite loss: no backward, the update is skipped;
* finite loss, non-finite gradient: the gradients are dropped, the update skipped;
* on a skip the buffers are written back, so every parameter *and* buffer is as it was
  before the batch; the skip is counted in the message hub (``nonfinite/consecutive``,
  ``nonfinite/total``, saved in checkpoints with the rest of the runtime info; logged as
  ``nonfinite_skips``) and ``max_nonfinite_skips`` skips in a row raise
  :class:`~oaml_mm.errors.NonFiniteLossError`, on which
  :class:`~oaml_mm.engine.runner.OAMLRunner` writes ``nonfinite_iter_{N}.pth``.

Under DDP the decision is collective: a rank with a bad loss makes every rank skip (the
others would otherwise wait in the gradient all-reduce forever); gradients are already
identical across ranks after the all-reduce, so their check needs no communication.
With AMP (:class:`GuardedAmpOptimWrapper`) the gradient check is left to the loss
scaler, which skips overflowing fp16 steps and lowers the scale itself.

The guard composes with a mixed-precision wrapper by inheritance, guard first:
:class:`GuardedAmpOptimWrapper` (fp16 AMP on GPU) and
:class:`GuardedBF16AutocastOptimWrapper` (bf16 autocast on CPU) add no code of their
own. See ``docs/reliability.md``.
"""
from contextlib import contextmanager
from typing import Dict, Iterable, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.logging import MessageHub, print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from oaml_mm.errors import ConfigError, NonFiniteLossError
from oaml_mm.registry import OPTIM_WRAPPERS
from .bf16_autocast_optim_wrapper import BF16AutocastOptimWrapper

__all__ = [
    'GuardedOptimWrapper', 'GuardedAmpOptimWrapper',
    'GuardedBF16AutocastOptimWrapper', 'NONFINITE_CONSECUTIVE', 'NONFINITE_TOTAL'
]

#: Message hub runtime-info keys of the skip counters.
NONFINITE_CONSECUTIVE = 'nonfinite/consecutive'
NONFINITE_TOTAL = 'nonfinite/total'
#: Message hub scalar the logger prints as ``nonfinite_skips``.
_LOG_KEY = 'train/nonfinite_skips'


def _all_finite(tensors: Iterable[Optional[torch.Tensor]]) -> bool:
    """True when every element of every tensor is finite (one host sync in all)."""
    flags = [torch.isfinite(t).all() for t in tensors if t is not None]
    if not flags:
        return True
    return bool(torch.stack(flags).all())


def _agree(ok: bool, device: torch.device) -> bool:
    """All ranks' verdict: True only when ``ok`` holds on every rank."""
    if not (dist.is_available() and dist.is_initialized()) or \
            dist.get_world_size() == 1:
        return ok
    if dist.get_backend() == 'nccl' and device.type != 'cuda':
        device = torch.device('cuda', torch.cuda.current_device())
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


@OPTIM_WRAPPERS.register_module()
class GuardedOptimWrapper(OptimWrapper):
    """:class:`~mmengine.optim.OptimWrapper` that skips non-finite updates.

    Every shipped config uses it (``configs/_base_/schedules/``)::

        optim_wrapper = dict(
            type='GuardedOptimWrapper', max_nonfinite_skips=5,
            optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4))

        # Mixed precision: the same guard around fp16 AMP (GPU) or bf16 (CPU);
        # tools/train.py --amp picks one of these.
        optim_wrapper = dict(type='GuardedAmpOptimWrapper', loss_scale='dynamic',
                             max_nonfinite_skips=5, optimizer=...)
        optim_wrapper = dict(type='GuardedBF16AutocastOptimWrapper',
                             max_nonfinite_skips=5, optimizer=...)

    The model needs nothing: mmengine's ``train_step`` (single process and DDP) calls
    :meth:`optim_context` around the forward pass and :meth:`update_params` after it.

    Gradient accumulation (``accumulative_counts``) works as in ``OptimWrapper``: the
    gradient check runs when the wrapper would step; a skip drops the gradients
    accumulated so far and restores the buffers to the start of the accumulation
    window; a skipped iteration still counts towards the window.

    Args:
        max_nonfinite_skips (int): Skipped updates in a row that stop training with
            :class:`~oaml_mm.errors.NonFiniteLossError`. Defaults to 5.
        check_grads (bool): Also check the gradients before stepping. Defaults to
            True (with a loss scaler, e.g. AMP, the scaler checks them instead).
        restore_buffers (bool): Write the model's buffers back on a skip. Defaults
            to True.
        **kwargs: Arguments of the wrapper this one is combined with
            (``optimizer``, ``accumulative_counts``, ``clip_grad``, ...).

    Raises:
        ConfigError: ``max_nonfinite_skips`` is below 1.
    """

    def __init__(self,
                 max_nonfinite_skips: int = 5,
                 check_grads: bool = True,
                 restore_buffers: bool = True,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if int(max_nonfinite_skips) < 1:
            raise ConfigError(
                f'{type(self).__name__}: max_nonfinite_skips must be >= 1, got '
                f'{max_nonfinite_skips}')
        self.max_nonfinite_skips = int(max_nonfinite_skips)
        self.check_grads = check_grads
        self.restore_buffers = restore_buffers
        self._snapshot: Optional[Tuple[nn.Module, Dict[str, torch.Tensor]]] = None

    # ------------------------------------------------------------ the forward pass
    @contextmanager
    def optim_context(self, model: nn.Module):
        """Copy the buffers of ``model``, then enter the wrapped context.

        Args:
            model (nn.Module): The model (or its DDP wrapper) about to run forward.
        """
        self.snapshot_buffers(model)
        with super().optim_context(model):
            yield

    def snapshot_buffers(self, model: nn.Module) -> None:
        """Copy the buffers of ``model`` (what a skip writes back).

        Called by :meth:`optim_context`; a subclass with its own context (e.g. a
        different autocast) calls it first.
        """
        # At the start of an accumulation window only: a skip drops the whole window.
        if self.restore_buffers and (
                self._snapshot is None
                or self._inner_count % self._accumulative_counts == 0):
            # By name: a module may rebind a buffer (``self.x = self.x + 1``).
            with torch.no_grad():
                self._snapshot = (model, {
                    name: buf.detach().clone()
                    for name, buf in model.named_buffers()
                })

    def _restore(self) -> None:
        if self._snapshot is None:
            return
        model, saved = self._snapshot
        with torch.no_grad():
            for name, buf in model.named_buffers():
                if name in saved:
                    buf.copy_(saved[name])

    # ------------------------------------------------------------- the update
    def update_params(self,
                      loss: torch.Tensor,
                      step_kwargs: Optional[Dict] = None,
                      zero_kwargs: Optional[Dict] = None) -> None:
        """``OptimWrapper.update_params``, skipping non-finite updates.

        Args:
            loss (Tensor): The total loss (``BaseModel.parse_losses`` sums the keys
                that contain ``'loss'``; accuracies and logged-only terms are not
                checked).
            step_kwargs (dict, optional): Arguments of ``optimizer.step``.
            zero_kwargs (dict, optional): Arguments of ``optimizer.zero_grad``.

        Raises:
            NonFiniteLossError: ``max_nonfinite_skips`` updates in a row were
                skipped; parameters and buffers hold their last finite values.
        """
        step_kwargs = step_kwargs or {}
        zero_kwargs = zero_kwargs or {}
        hub = MessageHub.get_current_instance()
        ok = _agree(bool(torch.isfinite(loss.detach()).all()), loss.device)
        reason = f'the loss is {float(loss.detach().float().sum())}'
        if ok:
            self.backward(self.scale_loss(loss))
            if not self.should_update():
                self._log(hub)
                return
            if self.check_grads and getattr(self, 'loss_scaler', None) is None:
                ok = _all_finite(p.grad for group in self.param_groups
                                 for p in group['params'])
                reason = 'a gradient is not finite'
            if ok:
                self.step(**step_kwargs)
                self.zero_grad(**zero_kwargs)
                hub.update_info(NONFINITE_CONSECUTIVE, 0)
                self._log(hub)
                return
        else:
            # No backward ran; the iteration still counts towards accumulation.
            self._inner_count += 1
        self._skip(hub, reason, zero_kwargs)

    def _skip(self, hub: MessageHub, reason: str, zero_kwargs: Dict) -> None:
        self.zero_grad(**zero_kwargs)
        self._restore()
        consecutive = int(hub.get_info(NONFINITE_CONSECUTIVE, 0)) + 1
        total = int(hub.get_info(NONFINITE_TOTAL, 0)) + 1
        hub.update_info(NONFINITE_CONSECUTIVE, consecutive)
        hub.update_info(NONFINITE_TOTAL, total)
        self._log(hub)
        if consecutive >= self.max_nonfinite_skips:
            raise NonFiniteLossError(
                f'{consecutive} consecutive updates skipped, the last because '
                f'{reason} ({total} skipped in this run); stopping. Lower the '
                'learning rate, check the data of the last iterations, or raise '
                f'optim_wrapper.max_nonfinite_skips (now '
                f'{self.max_nonfinite_skips}).')
        print_log(f'non-finite update skipped: {reason} ({total} skipped in '
                  'this run)', logger='current', level=30)

    @staticmethod
    def _log(hub: MessageHub) -> None:
        hub.update_scalar(_LOG_KEY, float(hub.get_info(NONFINITE_TOTAL, 0)))


@OPTIM_WRAPPERS.register_module()
class GuardedAmpOptimWrapper(GuardedOptimWrapper, AmpOptimWrapper):
    """:class:`GuardedOptimWrapper` around mmengine's fp16 ``AmpOptimWrapper`` (GPU).

    ``tools/train.py --amp`` selects it on CUDA machines::

        optim_wrapper = dict(type='GuardedAmpOptimWrapper', loss_scale='dynamic',
                             max_nonfinite_skips=5, optimizer=...)

    Non-finite losses are skipped and counted by the guard; fp16 gradient overflow is
    the loss scaler's to handle (it skips the step and lowers the scale).

    Args:
        **kwargs: Those of :class:`GuardedOptimWrapper` and
            :class:`~mmengine.optim.AmpOptimWrapper`.
    """


@OPTIM_WRAPPERS.register_module()
class GuardedBF16AutocastOptimWrapper(GuardedOptimWrapper,
                                      BF16AutocastOptimWrapper):
    """:class:`GuardedOptimWrapper` around :class:`BF16AutocastOptimWrapper` (CPU).

    ``tools/train.py --amp`` selects it on machines without CUDA::

        optim_wrapper = dict(type='GuardedBF16AutocastOptimWrapper',
                             max_nonfinite_skips=5, optimizer=...)

    Args:
        **kwargs: Those of :class:`GuardedOptimWrapper` and
            :class:`BF16AutocastOptimWrapper`.
    """
