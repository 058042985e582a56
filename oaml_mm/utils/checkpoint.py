"""Checkpoints that load with ``torch.load(weights_only=True)``.

torch >= 2.6 refuses to unpickle anything but tensors and plain containers unless told to
trust the file, and trusting it means a checkpoint can run arbitrary code. mmengine's
Runner writes ``HistoryBuffer`` objects, numpy arrays and numpy scalars into every
checkpoint, so a stock checkpoint cannot be resumed safely. These functions encode such
objects into plain containers before saving (:func:`to_weights_only`) and decode them
after a safe load (:func:`from_weights_only`); nothing ever widens the unpickler's
allow-list.
"""
import collections
import os
import os.path as osp
import pickle
import tempfile
import warnings
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from oaml_mm.errors import CheckpointError, UnsafeCheckpointError

__all__ = [
    'to_weights_only', 'from_weights_only', 'safe_load_checkpoint',
    'atomic_save', 'TYPE_KEY'
]

#: Key that marks an encoded object inside a checkpoint.
TYPE_KEY = '__oaml_type__'


def to_weights_only(obj: Any, _path: str = 'checkpoint') -> Any:
    """Encode ``obj`` so that ``torch.load(weights_only=True)`` can read it back.

    Tensors, numbers, strings, bytes, ``None`` and containers of them pass through.
    ``HistoryBuffer``, numpy arrays and numpy scalars are encoded as marked dicts (numpy
    scalars become Python numbers). Any other object is replaced by its ``repr`` with a
    warning naming where it sat: a checkpoint must never hold something that needs
    arbitrary unpickling.

    Args:
        obj: The checkpoint, or part of it.
        _path (str): Where ``obj`` sits, for the warning. Internal.

    Returns:
        The encoded object; the input is not modified.

    Examples:
        >>> ckpt = to_weights_only({'x': np.arange(3)})
        >>> from_weights_only(ckpt)['x']
        array([0, 1, 2])
    """
    if isinstance(obj, np.generic):
        # Before the builtin check: np.float64 subclasses float but pickles as
        # a numpy global the weights-only unpickler refuses.
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes,
                                       torch.Tensor, torch.dtype, torch.Size,
                                       torch.device)):
        return obj
    if isinstance(obj, HistoryBuffer):
        return {
            TYPE_KEY: 'HistoryBuffer',
            'log_history': [float(v) for v in obj._log_history],
            'count_history': [float(v) for v in obj._count_history],
            'max_length': int(obj.max_length),
        }
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return {
                TYPE_KEY: 'ndarray_object',
                'items': [to_weights_only(v, f'{_path}[{i}]')
                          for i, v in enumerate(obj.reshape(-1).tolist())],
                'shape': list(obj.shape)
            }
        if obj.dtype.kind in 'US':  # strings: keep them as a list
            return {
                TYPE_KEY: 'ndarray_str',
                'items': obj.reshape(-1).tolist(),
                'shape': list(obj.shape),
                'dtype': obj.dtype.str
            }
        return {
            TYPE_KEY: 'ndarray',
            'data': torch.from_numpy(np.ascontiguousarray(obj).copy()),
            'dtype': obj.dtype.str
        }
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict(
            (k, to_weights_only(v, f'{_path}.{k}')) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: to_weights_only(v, f'{_path}.{k}') for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_weights_only(v, f'{_path}[{i}]') for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return tuple(
            to_weights_only(v, f'{_path}[{i}]') for i, v in enumerate(obj))
    if isinstance(obj, (set, frozenset)):
        return {TYPE_KEY: 'set', 'items': [to_weights_only(v) for v in obj]}
    warnings.warn(f'{_path}: {type(obj).__name__} cannot be stored in a '
                  'weights-only checkpoint; saved as its repr instead.')
    return repr(obj)


def from_weights_only(obj: Any) -> Any:
    """Decode what :func:`to_weights_only` encoded.

    Args:
        obj: A checkpoint (or part of it) as loaded by ``torch.load``.

    Returns:
        The checkpoint with ``HistoryBuffer`` objects and numpy arrays restored.
    """
    if isinstance(obj, dict):
        kind = obj.get(TYPE_KEY) if TYPE_KEY in obj else None
        if kind == 'HistoryBuffer':
            buf = HistoryBuffer(max_length=obj['max_length'])
            buf._log_history = np.asarray(obj['log_history'])
            buf._count_history = np.asarray(obj['count_history'])
            return buf
        if kind == 'ndarray':
            return obj['data'].numpy().astype(np.dtype(obj['dtype']))
        if kind == 'ndarray_str':
            return np.asarray(
                obj['items'], dtype=np.dtype(obj['dtype'])).reshape(
                    obj['shape'])
        if kind == 'ndarray_object':
            items = [from_weights_only(v) for v in obj['items']]
            arr = np.empty(len(items), dtype=object)
            arr[:] = items
            return arr.reshape(obj['shape'])
        if kind == 'set':
            return {from_weights_only(v) for v in obj['items']}
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = from_weights_only(v)
        return out
    if isinstance(obj, list):
        return [from_weights_only(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(from_weights_only(v) for v in obj)
    return obj


def safe_load_checkpoint(
        filename: str,
        map_location: Union[str, torch.device, Callable, None] = 'cpu',
        decode: bool = True) -> Any:
    """Load a checkpoint with the weights-only unpickler.

    Args:
        filename (str): Path of the checkpoint.
        map_location: As for :func:`torch.load`.
        decode (bool): Apply :func:`from_weights_only` to the result.

    Returns:
        The loaded checkpoint.

    Raises:
        CheckpointError: The file is missing, truncated or not a torch checkpoint.
        UnsafeCheckpointError: The file holds objects outside the weights-only
            allow-list (possibly a malicious payload); nothing of it was executed.
    """
    filename = osp.expanduser(str(filename))
    if not osp.isfile(filename):
        raise CheckpointError(f'{filename}: no such checkpoint file')
    try:
        ckpt = torch.load(filename, map_location=map_location,
                          weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f'{filename}: refused to load: the file holds objects that are '
            'not weights (tensors and plain containers). Loading it could '
            'run arbitrary code. If it is an old mmengine checkpoint you '
            'trust, convert it with tools/model_converters/'
            f'sanitize_checkpoint.py. Detail: {str(e).splitlines()[0]}'
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(
            f'{filename}: not a readable torch checkpoint (truncated or '
            f'damaged?): {e}') from None
    return from_weights_only(ckpt) if decode else ckpt


def atomic_save(obj: Any, filename: str,
                encode: bool = True,
                saver: Optional[Callable[[Any, Any], None]] = None) -> None:
    """Save ``obj`` so that ``filename`` is either the old file or the whole new one.

    The data is written to a temporary file in the same folder, flushed to disk and
    renamed over ``filename``; a crash mid-write leaves at most a stray ``.tmp`` file.

    Args:
        obj: What to save.
        filename (str): Destination path.
        encode (bool): Apply :func:`to_weights_only` first.
        saver (callable, optional): ``saver(obj, file)``; defaults to ``torch.save``.
    """
    filename = str(filename)
    folder = osp.dirname(osp.abspath(filename))
    os.makedirs(folder, exist_ok=True)
    if encode:
        obj = to_weights_only(obj)
    saver = saver or torch.save
    fd, tmp = tempfile.mkstemp(
        prefix=osp.basename(filename) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            saver(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filename)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
