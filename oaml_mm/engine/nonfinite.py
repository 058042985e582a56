"""Skip optimizer updates whose loss or gradients are not finite.

One NaN or Inf that reaches ``optimizer.step`` poisons every weight it touches (SGD
momentum and Adam moments keep it forever), and the run then trains on for days
producing nothing. Large-scale trainers therefore check the loss and the gradients
before stepping and skip the update (fairseq's ``FloatingPointError`` handling,
DeepSpeed/apex's dynamic loss scaler ``overflow`` skip), aborting when it keeps
happening. :func:`guarded_update` is that rule for any mmengine ``OptimWrapper``:

* a non-finite loss: no backward, the update is skipped;
* finite loss, non-finite gradient: the gradients are dropped, the update skipped;
* each skip is counted in the message hub (``nonfinite/consecutive``,
  ``nonfinite/total``; saved in checkpoints with the rest of the runtime info) and
  ``max_consecutive`` skips in a row raise :class:`~oaml_mm.errors.NonFiniteLossError`.
  :class:`~oaml_mm.engine.runner.OAMLRunner` then writes ``nonfinite_iter_{N}.pth`` to
  inspect.

Under DDP the decision is collective: a rank with a bad loss makes every rank skip (the
others would otherwise wait in the gradient all-reduce forever); gradients are already
identical across ranks after the all-reduce, so their check needs no communication.
With ``AmpOptimWrapper`` the gradient check is left to its loss scaler, which skips
overflowing steps and lowers the scale itself.
"""
from typing import Dict, Iterable, Optional, Union

import torch
import torch.distributed as dist
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper

from oaml_mm.errors import NonFiniteLossError

__all__ = ['guarded_update', 'all_finite', 'NONFINITE_CONSECUTIVE',
           'NONFINITE_TOTAL']

#: Message hub runtime-info keys of the skip counters.
NONFINITE_CONSECUTIVE = 'nonfinite/consecutive'
NONFINITE_TOTAL = 'nonfinite/total'


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """True when every element of every tensor is finite (one host sync in all).

    Args:
        tensors (Iterable[Tensor]): Tensors on one device; ``None`` entries ignored.

    Returns:
        bool
    """
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


def _total_loss(losses: Union[torch.Tensor, Dict[str, torch.Tensor]]
                ) -> torch.Tensor:
    if isinstance(losses, torch.Tensor):
        return losses
    # mmengine's convention (BaseModel.parse_losses): keys containing 'loss'.
    terms = []
    for key, value in losses.items():
        if 'loss' not in key:
            continue
        if isinstance(value, (list, tuple)):
            terms.extend(v.mean() for v in value)
        else:
            terms.append(value.mean())
    if not terms:
        raise ValueError(f'no loss term among {sorted(losses)}; expected keys '
                         'containing "loss"')
    return sum(terms)


def guarded_update(optim_wrapper: OptimWrapper,
                   losses: Union[torch.Tensor, Dict[str, torch.Tensor]],
                   state: Optional[MessageHub] = None,
                   max_consecutive: int = 10,
                   check_grads: bool = True) -> bool:
    """``optim_wrapper.update_params(loss)``, skipping non-finite updates.

    Use it in a model's ``train_step`` in place of ``update_params``::

        parsed, log_vars = self.parse_losses(losses)
        updated = guarded_update(optim_wrapper, parsed,
                                 max_consecutive=self.train_cfg.get(
                                     'max_nonfinite_skips', 10))
        log_vars['nonfinite_skips'] = MessageHub.get_current_instance() \\
            .get_info(NONFINITE_TOTAL)

    Gradient accumulation works as in ``update_params``: the gradient check runs when
    the wrapper would step; a skip drops the whole accumulated gradient.

    Args:
        optim_wrapper (OptimWrapper): The wrapper ``train_step`` received.
        losses (Tensor | dict): The total loss, or a dict of losses summed over the
            keys that contain ``'loss'``.
        state (MessageHub, optional): Where the counters live; defaults to the
            current message hub (so they are checkpointed and resumed).
        max_consecutive (int): Skips in a row that abort training; ``<= 0`` never
            aborts. Defaults to 10.
        check_grads (bool): Also check the gradients before stepping. Defaults to
            True (ignored for ``AmpOptimWrapper``, whose scaler does it).

    Returns:
        bool: False when the update was skipped, True otherwise (including the
        accumulation steps that do not step).

    Raises:
        NonFiniteLossError: ``max_consecutive`` updates in a row were skipped.
    """
    hub = state if state is not None else MessageHub.get_current_instance()
    loss = _total_loss(losses)
    ok = _agree(bool(torch.isfinite(loss.detach()).all()), loss.device)
    reason = f'the loss is {float(loss.detach().float().sum())}'
    if ok:
        optim_wrapper.backward(optim_wrapper.scale_loss(loss))
        if not optim_wrapper.should_update():
            return True
        if check_grads and getattr(optim_wrapper, 'loss_scaler', None) is None:
            grads = [p.grad for group in optim_wrapper.param_groups
                     for p in group['params']]
            ok = all_finite(grads)
            reason = 'a gradient is not finite'
        if ok:
            optim_wrapper.step()
            optim_wrapper.zero_grad()
            hub.update_info(NONFINITE_CONSECUTIVE, 0)
            return True
    optim_wrapper.zero_grad()
    consecutive = int(hub.get_info(NONFINITE_CONSECUTIVE, 0)) + 1
    total = int(hub.get_info(NONFINITE_TOTAL, 0)) + 1
    hub.update_info(NONFINITE_CONSECUTIVE, consecutive)
    hub.update_info(NONFINITE_TOTAL, total)
    if 0 < max_consecutive <= consecutive:
        raise NonFiniteLossError(
            f'{consecutive} consecutive updates skipped, the last because '
            f'{reason} ({total} skipped in this run); stopping. Lower the '
            'learning rate, check the data of the last iterations, or raise '
            f'max_nonfinite_skips (now {max_consecutive}).')
    return False
