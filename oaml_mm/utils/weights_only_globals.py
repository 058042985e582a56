"""Data-only stand-ins for the globals stock mmengine checkpoints name.

A checkpoint written by a plain mmengine ``Runner`` pickles its message hub:
``HistoryBuffer`` objects holding numpy arrays, numpy scalars and dtypes, and (through
``HistoryBuffer._statistics_methods``) ``getattr(HistoryBuffer, 'mean')`` references.
``torch.load(weights_only=True)`` refuses all of these, and admitting the real globals
would let a file call numpy functions and ``getattr`` with arguments of its choosing.

:data:`STAND_INS` instead maps each of those names to an inert object defined here:
the weights-only unpickler hands the file's arguments to them, and they only *record*
the values (or refuse them). Nothing from the file is ever called, and nothing is
allocated before its size has been checked against the bytes the file really holds.
:func:`resolve` then turns the records into numpy arrays, numpy scalars, dtypes and
``HistoryBuffer`` objects, validating every field. The numpy pickle layout followed is
``ndarray.__reduce__``/``__setstate__`` (https://numpy.org/doc/stable/reference/
generated/numpy.ndarray.__setstate__.html); torch's allow-list mechanism is
``torch.serialization.safe_globals`` (https://pytorch.org/docs/stable/notes/
serialization.html#weights-only).
"""
import math
import pickle
import re
import threading
from typing import Any, List, Tuple

import numpy as np
from mmengine.logging import HistoryBuffer

__all__ = [
    'STAND_INS', 'RecordError', 'resolve', 'last_refusal', 'clear_refusal'
]

#: dtype kinds a checkpoint may hold: bool, integers, floats, complex, bytes, str
#: and object (whose items went through the same unpickler).
_KINDS = 'biufcSUO'
_DTYPE_PATTERN = re.compile(r'^[<>|=]?([biufcSUO?])(\d*)$')
_refusal = threading.local()


def last_refusal() -> str:
    """Why a stand-in refused its arguments during the last load ('' if none)."""
    return getattr(_refusal, 'text', '')


def clear_refusal() -> None:
    """Forget the last refusal (called before each load)."""
    _refusal.text = ''


def _refuse(text: str):
    _refusal.text = text
    raise pickle.UnpicklingError(text)


class _NDArrayRef:
    """Stands for the class ``numpy.ndarray``; it can never be instantiated."""

    def __new__(cls, *args, **kwargs):
        _refuse('numpy.ndarray may only appear as the first argument of '
                'numpy.core.multiarray._reconstruct')


class _DTypeRecord:
    """What ``numpy.dtype(spec, align, copy)`` plus ``__setstate__`` received."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.state: Tuple = ()

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple):
            _refuse(f'numpy.dtype state must be a tuple, got '
                    f'{type(state).__name__}')
        self.state = state


class _ArrayRecord:
    """What ``_reconstruct`` plus ``ndarray.__setstate__`` received."""

    def __init__(self) -> None:
        self.state: Tuple = ()

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple):
            _refuse(f'numpy.ndarray state must be a tuple, got '
                    f'{type(state).__name__}')
        self.state = state


class _ArrayFromBuffer:
    """What ``numpy.core.numeric._frombuffer`` (pickle protocol 5) received."""

    def __init__(self, buf, dtype, shape, order) -> None:
        self.state = (buf, dtype, shape, order)


class _HistoryBufferRecord:
    """Stands for ``mmengine.logging.HistoryBuffer``: keeps the pickled fields."""

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict):
            _refuse('HistoryBuffer state must be a dict, got '
                    f'{type(state).__name__}')
        self.fields = state


class _ScalarRecord:
    """What ``numpy.core.multiarray.scalar(dtype, data)`` received."""

    def __init__(self, dtype, data) -> None:
        self.dtype = dtype
        self.data = data


class _StatisticRef(str):
    """A statistic name of ``HistoryBuffer`` (the buffer re-creates the methods)."""


def _reconstruct(cls, shape=None, typecode=None) -> _ArrayRecord:
    if cls is not _NDArrayRef:
        _refuse(f'numpy.core.multiarray._reconstruct called with {cls!r}; '
                'only numpy.ndarray is admitted')
    return _ArrayRecord()


def _dtype(spec, align=False, copy=False) -> _DTypeRecord:
    if not isinstance(spec, str) or not _DTYPE_PATTERN.match(spec):
        _refuse(f'numpy.dtype({spec!r}) is not a plain numeric, string or '
                'object dtype')
    return _DTypeRecord(spec)


def _scalar(dtype, data=None):
    if not isinstance(dtype, _DTypeRecord):
        _refuse('numpy.core.multiarray.scalar needs a numpy.dtype first')
    return _ScalarRecord(dtype, data)


def _frombuffer(buf, dtype, shape, order) -> _ArrayFromBuffer:
    return _ArrayFromBuffer(buf, dtype, shape, order)


def _bytes(*args):
    # Protocol 2 pickles b'' (the data of an empty array) as bytes().
    if args:
        _refuse('builtins.bytes is admitted only without arguments (b\'\')')
    return b''


def _getattr(owner, name):
    # mmengine pickles HistoryBuffer._statistics_methods as getattr(HistoryBuffer,
    # 'mean') etc.; nothing else may use the name.
    if owner is not _HistoryBufferRecord or not isinstance(name, str) or \
            not name.isidentifier():
        _refuse(f'builtins.getattr({owner!r}, {name!r}) is not admitted: only '
                "getattr(HistoryBuffer, '<statistic>') as mmengine writes it")
    return _StatisticRef(name)


#: ``(stand-in, name as pickled)`` pairs for ``torch.serialization.safe_globals``.
STAND_INS: List[Tuple[Any, str]] = [
    (_NDArrayRef, 'numpy.ndarray'),
    (_dtype, 'numpy.dtype'),
    (_reconstruct, 'numpy.core.multiarray._reconstruct'),
    (_reconstruct, 'numpy._core.multiarray._reconstruct'),
    (_scalar, 'numpy.core.multiarray.scalar'),
    (_scalar, 'numpy._core.multiarray.scalar'),
    (_frombuffer, 'numpy.core.numeric._frombuffer'),
    (_frombuffer, 'numpy._core.numeric._frombuffer'),
    (_HistoryBufferRecord, 'mmengine.logging.history_buffer.HistoryBuffer'),
    (_getattr, 'builtins.getattr'),
    (_bytes, 'builtins.bytes'),
    # The records are admitted under their own names so that BUILD may fill them.
    (_DTypeRecord, 'oaml_mm.utils.weights_only_globals._DTypeRecord'),
    (_ArrayRecord, 'oaml_mm.utils.weights_only_globals._ArrayRecord'),
]


class RecordError(ValueError):
    """A record does not describe a valid array, scalar, dtype or buffer."""


def _to_dtype(rec) -> np.dtype:
    if not isinstance(rec, _DTypeRecord):
        raise RecordError(f'expected a numpy.dtype, got {type(rec).__name__}')
    m = _DTYPE_PATTERN.match(rec.spec)
    kind, size = m.group(1), m.group(2)
    state = rec.state or (3, '|', None, None, None, -1, -1, 0)
    if len(state) < 6 or any(s is not None for s in state[2:5]):
        raise RecordError(f'numpy.dtype({rec.spec!r}): structured or '
                          'sub-array dtypes are not admitted')
    order, elsize = state[1], state[5]
    if order not in ('<', '>', '|', '='):
        raise RecordError(f'numpy.dtype byte order {order!r}')
    if kind in 'SU':
        if not isinstance(elsize, int) or elsize < 0 or elsize > 1 << 20:
            raise RecordError(f'numpy.dtype({rec.spec!r}) item size {elsize!r}')
        chars = elsize // (4 if kind == 'U' else 1) if elsize > 0 else \
            int(size or 0) // (4 if kind == 'U' and size else 1)
        dt = np.dtype(f'{kind}{chars}')
    else:
        dt = np.dtype(rec.spec.lstrip('<>|='))
    if dt.kind not in _KINDS:
        raise RecordError(f'numpy.dtype kind {dt.kind!r} is not admitted')
    if order in '<>' and dt.byteorder != '|':
        dt = dt.newbyteorder(order)
    return dt


def _shape(shape) -> Tuple[int, ...]:
    if not isinstance(shape, tuple) or len(shape) > 32 or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0
            for n in shape):
        raise RecordError(f'array shape {shape!r} is not a tuple of '
                          'non-negative integers')
    return shape


def _array(rec: _ArrayRecord) -> np.ndarray:
    state = rec.state
    if len(state) != 5 or state[0] != 1:
        raise RecordError('numpy.ndarray state is not (1, shape, dtype, '
                          'fortran, data)')
    _, shape, dtype, fortran, data = state
    shape, dt = _shape(shape), _to_dtype(dtype)
    count = math.prod(shape)
    order = 'F' if fortran else 'C'
    if dt.kind == 'O':
        if not isinstance(data, list) or len(data) != count:
            raise RecordError(f'object array of shape {shape} needs {count} '
                              'items')
        out = np.empty(count, dtype=object)
        out[:] = [resolve(v) for v in data]
        return out.reshape(shape, order=order)
    if not isinstance(data, (bytes, bytearray)):
        raise RecordError('array data must be bytes, got '
                          f'{type(data).__name__}')
    # Checked before anything is allocated: the size is what the file holds.
    if len(data) != count * dt.itemsize:
        raise RecordError(f'array of shape {shape} and dtype {dt} needs '
                          f'{count * dt.itemsize} bytes, the file holds '
                          f'{len(data)}')
    return np.frombuffer(bytes(data), dtype=dt).reshape(
        shape, order=order).copy()


def _array_from_buffer(rec: _ArrayFromBuffer) -> np.ndarray:
    buf, dtype, shape, order = rec.state
    if isinstance(buf, pickle.PickleBuffer):
        buf = bytes(buf.raw())
    arr = _ArrayRecord()
    arr.state = (1, shape, dtype, order == 'F', buf)
    return _array(arr)


def _scalar_value(rec: _ScalarRecord):
    dt, data = _to_dtype(rec.dtype), rec.data
    if dt.kind == 'O':
        return resolve(data)
    if not isinstance(data, (bytes, bytearray)) or len(data) != dt.itemsize:
        raise RecordError(f'numpy scalar of dtype {dt} needs {dt.itemsize} '
                          'bytes')
    return np.frombuffer(bytes(data), dtype=dt)[0]


def _history_buffer(rec: _HistoryBufferRecord) -> HistoryBuffer:
    fields = getattr(rec, 'fields', {})
    try:
        log = np.asarray(resolve(fields['_log_history']))
        count = np.asarray(resolve(fields['_count_history']))
        max_length = int(fields.get('max_length', 1000000))
    except (KeyError, TypeError, ValueError) as e:
        raise RecordError(f'HistoryBuffer fields are damaged ({e})') from None
    if log.dtype.kind not in 'biuf' or count.dtype.kind not in 'biuf':
        raise RecordError('HistoryBuffer histories must be numeric arrays')
    if log.ndim != 1 or count.shape != log.shape or max_length <= 0:
        raise RecordError('HistoryBuffer histories must be two 1-D arrays of '
                          'one length')
    buf = HistoryBuffer(max_length=max_length)
    buf._log_history = log
    buf._count_history = count
    return buf


def resolve(obj: Any) -> Any:
    """Replace the records a stand-in left in ``obj`` by the real values.

    Args:
        obj: What ``torch.load(weights_only=True)`` returned with
            :data:`STAND_INS` admitted.

    Returns:
        The same structure with numpy arrays, numpy scalars, dtypes and
        ``HistoryBuffer`` objects in place of the records.

    Raises:
        RecordError: A record does not describe a valid value (wrong byte count,
            unknown dtype, damaged buffer fields).
    """
    if isinstance(obj, _ArrayRecord):
        return _array(obj)
    if isinstance(obj, _ArrayFromBuffer):
        return _array_from_buffer(obj)
    if isinstance(obj, _DTypeRecord):
        return _to_dtype(obj)
    if isinstance(obj, _HistoryBufferRecord):
        return _history_buffer(obj)
    if isinstance(obj, _ScalarRecord):
        return _scalar_value(obj)
    if isinstance(obj, dict):
        for k in list(obj):
            obj[k] = resolve(obj[k])
        return obj
    if isinstance(obj, list):
        for i, v in enumerate(obj):
            obj[i] = resolve(v)
        return obj
    if isinstance(obj, tuple):
        return tuple(resolve(v) for v in obj)
    if isinstance(obj, (set, frozenset)):
        return type(obj)(resolve(v) for v in obj)
    return obj
