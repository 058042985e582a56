"""Does a checkpoint fit the run that resumes from it?

Resuming continues the same run, so every tensor and the optimizer must be those
the checkpoint was saved with. mmengine skips mismatched tensors with a warning and
hands the optimizer state over unchecked; a changed ``num_classes`` or a switch
from SGD to AdamW then fails iterations later inside the optimizer with a
traceback (``size mismatch``, ``KeyError: 'betas'``, ``TypeError ... 'momentum'``).
:func:`check_resume_fit` compares them first and says what differs.
"""
from typing import Any, Dict, List, Optional

import torch

from oaml_mm.errors import CheckpointError

__all__ = ['check_resume_fit']

#: Group keys torch fills in on load or that schedulers add: their absence or
#: presence does not tell optimizers apart (they vary with the torch version).
_FLEXIBLE_KEYS = {
    'params', 'param_names', 'initial_lr', 'foreach', 'maximize', 'capturable',
    'differentiable', 'fused', 'decoupled_weight_decay'
}


def _shape(t: Any) -> str:
    return 'x'.join(str(n) for n in t.shape) if t.dim() else 'scalar'


def _check_tensors(filename: str, state_dict: Dict[str, Any],
                   model: torch.nn.Module) -> None:
    own = model.state_dict()
    bad: List[str] = []
    for key, value in state_dict.items():
        key = key[len('module.'):] if key.startswith('module.') else key
        if key in own and isinstance(value, torch.Tensor) and \
                tuple(value.shape) != tuple(own[key].shape):
            bad.append(f'{key} is {_shape(value)} in the checkpoint but '
                       f'{_shape(own[key])} in the model')
    if bad:
        more = f' (and {len(bad) - 2} more)' if len(bad) > 2 else ''
        raise CheckpointError(
            f'{filename}: cannot resume: {"; ".join(bad[:2])}{more}. A size '
            'in the config (num_classes, embedding_size, width, ...) changed '
            'since the checkpoint was saved. Set it back to resume, or start '
            f'a new run from these weights with load_from={filename} and '
            'without --resume (mismatched tensors are then re-initialised)')


def _check_optimizer(filename: str, name: str, saved: Any,
                     optimizer: torch.optim.Optimizer) -> None:
    groups = saved.get('param_groups') if isinstance(saved, dict) else None
    if not isinstance(groups, list) or not groups or \
            not all(isinstance(g, dict) for g in groups):
        return
    kind = type(optimizer).__name__
    where = f'optimizer {name!r}' if name else 'optimizer'
    restart = (f'start a new run from these weights with load_from={filename} '
               'and without --resume (the optimizer then starts afresh)')
    saved_keys = set(groups[0]) - _FLEXIBLE_KEYS
    own_keys = set(optimizer.param_groups[0]) - _FLEXIBLE_KEYS
    needed = set(optimizer.defaults) - _FLEXIBLE_KEYS
    unknown = sorted(saved_keys - own_keys)
    missing = sorted(needed - saved_keys)
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f'has {", ".join(unknown)}, which {kind} does not use')
        if missing:
            parts.append(f'lacks {", ".join(missing)}, which {kind} needs')
        raise CheckpointError(
            f'{filename}: cannot resume: the {where} state in the checkpoint '
            f'{" and ".join(parts)}: the optimizer type changed since the '
            f'checkpoint was saved. Set the config\'s optimizer back to resume, '
            f'or {restart}')
    saved_sizes = [len(g.get('params', ())) for g in groups]
    own_sizes = [len(g['params']) for g in optimizer.param_groups]
    if saved_sizes != own_sizes:
        raise CheckpointError(
            f'{filename}: cannot resume: the {where} state in the checkpoint '
            f'has parameter groups of sizes {saved_sizes}, the config\'s '
            f'{kind} has {own_sizes}: the model or paramwise_cfg changed since '
            f'the checkpoint was saved. Set them back to resume, or {restart}')


def check_resume_fit(filename: str, checkpoint: Dict[str, Any],
                     model: torch.nn.Module,
                     optim_wrapper: Optional[Any] = None) -> None:
    """Check that ``checkpoint`` fits ``model`` and ``optim_wrapper`` exactly.

    Args:
        filename (str): The checkpoint's path, for the message.
        checkpoint (dict): The loaded checkpoint (``state_dict``, ``optimizer``).
        model (nn.Module): The (unwrapped) model about to be resumed.
        optim_wrapper (OptimWrapper | OptimWrapperDict, optional): The built
            optimizer wrapper; anything else (a config dict) is not checked.

    Raises:
        CheckpointError: A tensor's shape differs (e.g. ``num_classes`` changed),
            the optimizer's kind differs (e.g. SGD saved, AdamW configured), or
            the parameter groups differ. The one-line message names what differs
            and what to do.
    """
    state_dict = checkpoint.get('state_dict', checkpoint)
    if isinstance(state_dict, dict):
        _check_tensors(filename, state_dict, model)
    saved = checkpoint.get('optimizer')
    if saved is None or optim_wrapper is None:
        return
    from mmengine.optim import OptimWrapper, OptimWrapperDict
    if isinstance(optim_wrapper, OptimWrapperDict):
        for name, wrapper in optim_wrapper.items():
            if isinstance(saved, dict) and name in saved:
                _check_optimizer(filename, name, saved[name],
                                 wrapper.optimizer)
    elif isinstance(optim_wrapper, OptimWrapper):
        _check_optimizer(filename, '', saved, optim_wrapper.optimizer)
