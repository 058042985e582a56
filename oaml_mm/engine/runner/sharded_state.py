"""Parameters sharded over the ranks (Partial FC): DDP exclusion and checkpoints.

A module that splits a parameter over the ranks (each rank holding its
:func:`~oaml_mm.utils.shard_range` slice, e.g.
:class:`~oaml_mm.models.heads.PartialFCHead`) says so with
``sharded_parameters() -> {name: (dim, whole_size)}``. For such parameters:

* DDP must neither broadcast them from rank 0 nor average their gradients
  (:func:`ddp_ignored_names`);
* the checkpoint, written by rank 0 only, must hold the whole tensor and its whole
  optimizer state: every rank takes part in a gather first
  (:func:`gather_sharded_state`), and rank 0 puts the gathered optimizer state into
  the checkpoint (:func:`put_sharded_optimizer_state`);
* a loaded checkpoint's whole optimizer state is cut to this rank's slice
  (:func:`shard_optimizer_state`), at any world size. The module itself does the
  same for its weights (a ``state_dict`` load hook).
"""
from itertools import chain
from typing import Any, Dict, Iterator, List, Tuple

import torch
import torch.nn as nn

from oaml_mm.utils.dist import dist_info, gather_shards, shard_range

__all__ = [
    'sharded_parameters', 'ddp_ignored_names', 'gather_sharded_state',
    'release_sharded_state', 'put_sharded_optimizer_state',
    'shard_optimizer_state'
]


def sharded_parameters(
        model: nn.Module) -> Iterator[Tuple[str, nn.Parameter, int, int]]:
    """``(qualified name, parameter, dim, whole size)`` of each sharded parameter."""
    for prefix, module in model.named_modules():
        table = getattr(module, 'sharded_parameters', None)
        if not callable(table):
            continue
        for name, (dim, total) in table().items():
            full = f'{prefix}.{name}' if prefix else name
            yield full, getattr(module, name), int(dim), int(total)


def ddp_ignored_names(model: nn.Module) -> List[str]:
    """Names to pass to DDP's ``_set_params_and_buffers_to_ignore_for_model``."""
    return [name for name, *_ in sharded_parameters(model)]


def _optimizer_index(optimizer: torch.optim.Optimizer) -> Dict[int, int]:
    """id(parameter) -> its key in ``optimizer.state_dict()['state']``."""
    params = chain.from_iterable(g['params'] for g in optimizer.param_groups)
    return {id(p): i for i, p in enumerate(params)}


def _optimizers(optim_wrapper: Any) -> List[Tuple[str, Any]]:
    """``(name, torch optimizer)`` of an OptimWrapper or OptimWrapperDict."""
    if optim_wrapper is None or isinstance(optim_wrapper, dict):
        return []
    if hasattr(optim_wrapper, 'optimizer'):
        return [('', optim_wrapper.optimizer)]
    if hasattr(optim_wrapper, 'items'):
        return [(k, w.optimizer) for k, w in optim_wrapper.items()]
    return []


def gather_sharded_state(model: nn.Module, optim_wrapper: Any,
                         dst: int = 0) -> Dict[str, Dict[int, Dict[str, Any]]]:
    """Collective: gather the sharded weights and their optimizer state to ``dst``.

    Every rank must call it. Modules with ``gather_for_checkpoint`` keep their
    whole weights for the next ``state_dict()`` on ``dst``.

    Args:
        model (nn.Module): The unwrapped model.
        optim_wrapper: The runner's OptimWrapper / OptimWrapperDict (or None).
        dst (int): The rank that writes the checkpoint.

    Returns:
        dict: On ``dst``: optimizer name -> parameter key -> state key -> whole
        tensor (state tensors shaped like the parameter). Empty elsewhere.
    """
    rank, _ = dist_info()
    for module in model.modules():
        if callable(getattr(module, 'gather_for_checkpoint', None)):
            module.gather_for_checkpoint(dst=dst)
    out: Dict[str, Dict[int, Dict[str, Any]]] = {}
    shards = list(sharded_parameters(model))
    for opt_name, optimizer in _optimizers(optim_wrapper):
        index = _optimizer_index(optimizer)
        for _, param, dim, total in shards:
            if id(param) not in index:
                continue
            state = optimizer.state.get(param, {})
            # Same keys on every rank (they step together).
            for key in sorted(state):
                value = state[key]
                if not (isinstance(value, torch.Tensor)
                        and value.shape == param.shape):
                    continue
                full = gather_shards(value, total, dim=dim, dst=dst)
                if rank == dst:
                    out.setdefault(opt_name, {}).setdefault(
                        index[id(param)], {})[key] = full
    return out


def release_sharded_state(model: nn.Module) -> None:
    """Undo the modules' part of :func:`gather_sharded_state`."""
    for module in model.modules():
        if callable(getattr(module, 'release_gathered', None)):
            module.release_gathered()


def put_sharded_optimizer_state(checkpoint: dict,
                                gathered: Dict[str, Dict[int, Dict[str, Any]]]
                                ) -> None:
    """Replace rank 0's slices in ``checkpoint['optimizer']`` by the whole state."""
    saved = checkpoint.get('optimizer')
    for opt_name, params in gathered.items():
        state = saved.get(opt_name) if opt_name else saved
        if not isinstance(state, dict) or 'state' not in state:
            continue
        for idx, tensors in params.items():
            state['state'].setdefault(idx, {}).update(tensors)


def shard_optimizer_state(checkpoint: dict, model: nn.Module,
                          optim_wrapper: Any) -> None:
    """Cut the whole optimizer state of sharded parameters to this rank's slice.

    State tensors already of this rank's shape are left alone (a checkpoint
    written by one process, or before the parameters were sharded).
    """
    saved = checkpoint.get('optimizer')
    if not isinstance(saved, dict):
        return
    rank, world = dist_info()
    shards = list(sharded_parameters(model))
    for opt_name, optimizer in _optimizers(optim_wrapper):
        state = saved.get(opt_name) if opt_name else saved
        if not isinstance(state, dict) or not isinstance(
                state.get('state'), dict):
            continue
        index = _optimizer_index(optimizer)
        for _, param, dim, total in shards:
            entry = state['state'].get(index.get(id(param)))
            if not isinstance(entry, dict):
                continue
            start, end = shard_range(total, world, rank)
            for key, value in list(entry.items()):
                if isinstance(value, torch.Tensor) and value.dim() == \
                        param.dim() and value.shape[dim] == total and \
                        value.shape != param.shape:
                    entry[key] = value.narrow(dim, start, end - start).clone()
