"""Checkpoints that load with ``torch.load(weights_only=True)``.

torch >= 2.6 refuses to unpickle anything but tensors and plain containers unless told
to trust the file, and trusting it means a checkpoint can run arbitrary code. mmengine's
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
import pickletools
import re
import tempfile
import warnings
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from oaml_mm.errors import CheckpointError, UnsafeCheckpointError
from .weights_only_globals import (STAND_INS, RecordError, clear_refusal,
                                   last_refusal, resolve)

__all__ = [
    'to_weights_only', 'from_weights_only', 'safe_load_checkpoint',
    'atomic_save', 'install_weights_only_loaders', 'TYPE_KEY'
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


#: The weights-only unpickler's messages that mean "this global is not admitted"
#: (as opposed to a damaged pickle stream).
_UNSAFE_PATTERNS = (
    re.compile(r'GLOBAL (\S+) was not an allowed global'),
    re.compile(r'unsupported GLOBAL (\S+) whose module'),
    re.compile(r'unrecognized function (.+?)(?: which belongs|$)', re.M),
    re.compile(r'Can only build .* but got (.+)$', re.M),
    re.compile(r'Can only create new object .* but got (.+)$', re.M),
    re.compile(r'Unsupported operand (\d+)'),
)
_ANSI = re.compile(r'\x1b\[[0-9;]*m')
_CONVERT_HINT = (
    'To convert it, save it again where it was made, from the objects in '
    'memory: torch.save(oaml_mm.utils.to_weights_only(checkpoint), OUT) keeps '
    "everything as data, torch.save({'state_dict': model.state_dict()}, OUT) "
    'keeps the weights only')
#: Opcodes that reference or build arbitrary objects; any other opcode the
#: unpickler does not support means the stream is damaged, not unsafe.
_OBJECT_OPCODES = {op.code: op.name for op in pickletools.opcodes
                   if op.name in ('STACK_GLOBAL', 'INST', 'OBJ', 'NEWOBJ_EX',
                                  'EXT1', 'EXT2', 'EXT4')}


def _globals_in_pickles(filename: str, max_pickles: int = 5) -> List[str]:
    """Globals the pickle stream(s) of a checkpoint name, found without running it.

    Reads ``data.pkl`` of a zip checkpoint, or up to ``max_pickles`` consecutive
    pickles of a legacy file, with :func:`pickletools.genops` (opcodes only);
    ``STACK_GLOBAL`` names are taken from the strings pushed before it. A
    damaged stream ends the scan.
    """
    import _compat_pickle
    import zipfile
    names: List[str] = []

    def scan(f) -> None:
        for _ in range(max_pickles):
            strings: List[str] = []
            memo: Dict[int, Any] = {}
            last: Any = None
            for op, arg, _ in pickletools.genops(f):
                if op.name in ('GLOBAL', 'INST'):
                    module, name = arg.split(' ', 1)
                elif op.name == 'STACK_GLOBAL' and len(strings) >= 2:
                    module, name = strings[-2], strings[-1]
                else:
                    module = None
                if module is not None:
                    if (module, name) in _compat_pickle.NAME_MAPPING:
                        module, name = _compat_pickle.NAME_MAPPING[(module,
                                                                    name)]
                    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
                    names.append(f'{module}.{name}')
                if isinstance(arg, str) and 'UNICODE' in op.name:
                    last = arg
                    strings.append(arg)
                elif op.name == 'MEMOIZE':
                    memo[len(memo)] = last
                elif op.name in ('BINPUT', 'LONG_BINPUT', 'PUT'):
                    memo[arg] = last
                elif op.name in ('BINGET', 'LONG_BINGET', 'GET'):
                    last = memo.get(arg)
                    if isinstance(last, str):
                        strings.append(last)
                if op.name == 'STOP':
                    break
            else:
                return

    try:
        if zipfile.is_zipfile(filename):
            with zipfile.ZipFile(filename) as z:
                member = next(n for n in z.namelist()
                              if n == 'data.pkl' or n.endswith('/data.pkl'))
                with z.open(member) as f:
                    scan(f)
        else:
            with open(filename, 'rb') as f:
                scan(f)
    except Exception:  # noqa: BLE001  (a damaged stream ends the scan)
        pass
    return names


def _admitted_names() -> set:
    from torch._weights_only_unpickler import _get_allowed_globals
    return set(_get_allowed_globals()) | {name for _, name in STAND_INS}


def _unsafe_global(filename: str, message: str) -> Optional[str]:
    """The global (or opcode) the weights-only unpickler refused, if any."""
    refused = last_refusal()
    if refused:
        return refused
    admitted = _admitted_names()
    for name in _globals_in_pickles(filename):
        if name not in admitted:
            return name
    message = _ANSI.sub('', message)
    for pattern in _UNSAFE_PATTERNS:
        m = pattern.search(message)
        if m:
            found = m.group(1).strip()
            if not found.isdigit():
                return found
            name = _OBJECT_OPCODES.get(chr(int(found)))
            return f'an object through pickle opcode {name}' if name else None
    return None


def safe_load_checkpoint(
        filename: str,
        map_location: Union[str, torch.device, Callable, None] = 'cpu',
        decode: bool = True,
        mmap: bool = False) -> Any:
    """Load a checkpoint with the weights-only unpickler, whatever the environment.

    ``weights_only=True`` is always passed explicitly, so neither
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` nor a torch default can switch it off.
    Besides tensors and plain containers, the data-only types a stock mmengine
    ``Runner`` writes (``HistoryBuffer``, numpy arrays, scalars and dtypes) are
    read through the inert stand-ins of
    :mod:`oaml_mm.utils.weights_only_globals`; no callable named by the file is
    admitted (see ``docs/reliability.md``).

    Args:
        filename (str): Path of the checkpoint.
        map_location: As for :func:`torch.load`.
        decode (bool): Apply :func:`from_weights_only` to the result.
        mmap (bool): Map the tensor data instead of reading it (zip checkpoints
            only); used to read a checkpoint's ``meta`` cheaply.

    Returns:
        The loaded checkpoint.

    Raises:
        CheckpointError: The file is missing, truncated, damaged or not a torch
            checkpoint.
        UnsafeCheckpointError: The file names a global outside the allow-list
            (possibly a malicious payload); nothing of it was executed. The
            message names the global and how to convert the file.
    """
    filename = osp.expanduser(str(filename))
    if not osp.isfile(filename):
        raise CheckpointError(f'{filename}: no such checkpoint file')
    clear_refusal()
    try:
        with torch.serialization.safe_globals(STAND_INS), \
                warnings.catch_warnings():
            # torch warns about pickle protocols > 2 before refusing or reading.
            warnings.simplefilter('ignore', UserWarning)
            ckpt = torch.load(filename, map_location=map_location,
                              weights_only=True, mmap=mmap)
        ckpt = resolve(ckpt)
    except RecordError as e:
        raise CheckpointError(f'{filename}: damaged numpy or HistoryBuffer '
                              f'data: {e}') from None
    except Exception as e:  # noqa: BLE001  (torch raises many types)
        text = _ANSI.sub('', str(e))
        unsafe = _unsafe_global(filename, text) if isinstance(
            e, (pickle.UnpicklingError, TypeError)) else None
        if unsafe is not None:
            raise UnsafeCheckpointError(
                f'{filename}: refused to load: it names {unsafe}, which is '
                'neither weights nor data (tensors, numbers, strings, '
                'containers, numpy arrays, mmengine HistoryBuffer); loading '
                f'it could run code, so nothing of it was run. {_CONVERT_HINT}'
            ) from None
        # torch prefixes advice about weights_only=False; keep the cause only.
        text = text.split('WeightsUnpickler error:')[-1].split(
            'Check the documentation of torch.load')[0]
        first = ' '.join(text.split())[:300]
        raise CheckpointError(
            f'{filename}: not a readable torch checkpoint (truncated or '
            f'damaged?): {type(e).__name__}: {first}') from None
    finally:
        clear_refusal()
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


def load_from_local_weights_only(filename: str, map_location=None) -> Any:
    """mmengine ``CheckpointLoader`` scheme for local paths (weights-only)."""
    return safe_load_checkpoint(filename, map_location=map_location)


def load_from_http_weights_only(filename: str, map_location=None) -> Any:
    """``http(s)://``: download into the torch hub cache (rank 0), load weights-only."""
    from mmengine.dist import barrier, get_dist_info
    rank, world_size = get_dist_info()
    folder = osp.join(torch.hub.get_dir(), 'checkpoints')
    path = osp.join(folder, osp.basename(filename.split('?')[0]))
    if rank == 0 and not osp.isfile(path):
        os.makedirs(folder, exist_ok=True)
        torch.hub.download_url_to_file(filename, path, progress=False)
    if world_size > 1:
        barrier()
    return safe_load_checkpoint(path, map_location=map_location)


def load_from_zoo_weights_only(filename: str, map_location=None) -> Any:
    """``torchvision://``, ``open-mmlab://``, ``mmcls://``: mmengine's URL tables."""
    from mmengine.runner import checkpoint as mm_ckpt
    prefix, name = filename.split('://', 1)
    if prefix in ('torchvision', 'modelzoo'):
        url = mm_ckpt.get_torchvision_models()[name]
    elif prefix == 'mmcls':
        url = mm_ckpt.get_mmcls_models()[name]
        return mm_ckpt._process_mmcls_checkpoint(
            load_from_http_weights_only(url, map_location))
    else:
        url = mm_ckpt.get_external_models()[
            mm_ckpt.get_deprecated_model_names().get(name, name)]
        if not url.startswith(('http://', 'https://')):
            return safe_load_checkpoint(
                osp.join(mm_ckpt._get_mmengine_home(), url), map_location)
    return load_from_http_weights_only(url, map_location)


def load_from_backend_weights_only(filename: str, map_location=None) -> Any:
    """``s3://``/``petrel://``: fetched through mmengine.fileio, loaded weights-only."""
    from mmengine.fileio import get
    fd, tmp = tempfile.mkstemp(suffix='.pth')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(get(filename))
        return safe_load_checkpoint(tmp, map_location=map_location)
    finally:
        os.remove(tmp)


def _refuse_scheme(filename: str, map_location=None) -> Any:
    raise CheckpointError(
        f'{filename}: this storage scheme has no weights-only loader in '
        'oaml_mm; copy the file to a local path and load that')


def install_weights_only_loaders() -> None:
    """Route every checkpoint mmengine loads through :func:`safe_load_checkpoint`.

    mmengine's ``CheckpointLoader`` (used by ``Runner.load_checkpoint``,
    ``--resume``, ``load_from`` and ``init_cfg=dict(type='Pretrained')``) calls
    ``torch.load`` without ``weights_only``, which
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns into a full unpickler. This
    replaces each of its schemes: local paths, ``http(s)://`` (downloaded into
    the torch hub cache first), the model-zoo names, ``s3://``/``petrel://``
    (fetched through mmengine.fileio) load weights-only; ``pavi://`` is refused.
    Called when :mod:`oaml_mm` is imported; calling it again is harmless.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    schemes = {
        '': load_from_local_weights_only,
        'http://': load_from_http_weights_only,
        'https://': load_from_http_weights_only,
        'torchvision://': load_from_zoo_weights_only,
        'modelzoo://': load_from_zoo_weights_only,
        'open-mmlab://': load_from_zoo_weights_only,
        'openmmlab://': load_from_zoo_weights_only,
        'mmcls://': load_from_zoo_weights_only,
        r'(\S+\:)?s3://': load_from_backend_weights_only,
        r'(\S+\:)?petrel://': load_from_backend_weights_only,
    }
    for prefix in list(CheckpointLoader._schemes):
        CheckpointLoader.register_scheme(
            prefix, schemes.get(prefix, _refuse_scheme), force=True)
    for prefix, loader in schemes.items():
        CheckpointLoader.register_scheme(prefix, loader, force=True)


install_weights_only_loaders()
