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
import io
import os
import os.path as osp
import pickle
import pickletools
import re
import tempfile
import warnings
import zipfile
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from oaml_mm.errors import (CheckpointError, OutputPathError,
                            UnsafeCheckpointError)
from .weights_only_globals import (STAND_INS, RecordError, clear_refusal,
                                   last_refusal, resolve)

__all__ = [
    'to_weights_only', 'from_weights_only', 'safe_load_checkpoint',
    'atomic_save', 'install_weights_only_loaders', 'TYPE_KEY',
    'check_checkpoint_file', 'resolve_last_checkpoint', 'state_dict_mismatch',
    'fill_batchnorm_counters', 'user_file_mode', 'check_checkpoint_fits'
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


def from_weights_only(obj: Any, _path: str = 'checkpoint') -> Any:
    """Decode what :func:`to_weights_only` encoded.

    Args:
        obj: A checkpoint (or part of it) as loaded by ``torch.load``.
        _path (str): Where ``obj`` sits, for messages. Internal.

    Returns:
        The checkpoint with ``HistoryBuffer`` objects and numpy arrays restored.

    Raises:
        CheckpointError: A type marker (``TYPE_KEY``) whose fields are missing,
            of the wrong type or ask for an unbounded allocation (a damaged or
            crafted file); the message names where it sits.
    """
    if isinstance(obj, dict):
        kind = obj.get(TYPE_KEY) if TYPE_KEY in obj else None
        if kind is not None:
            try:
                return _decode_marked(obj, kind, _path)
            except CheckpointError:
                raise
            except Exception as e:  # noqa: BLE001  (any malformed field)
                raise CheckpointError(
                    f'{_path}: malformed {TYPE_KEY}={kind!r} record '
                    f'({type(e).__name__}: {" ".join(str(e).split())[:160]}); '
                    'expected the fields oaml_mm writes for it') from None
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = from_weights_only(v, f'{_path}.{k}')
        return out
    if isinstance(obj, list):
        return [from_weights_only(v, f'{_path}[{i}]') for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return tuple(from_weights_only(v, f'{_path}[{i}]')
                     for i, v in enumerate(obj))
    return obj


#: Largest string item width a decoded ``ndarray_str`` may declare (characters).
_MAX_STR_WIDTH = 1 << 16


def _decode_marked(obj: dict, kind: Any, path: str) -> Any:
    """One :data:`TYPE_KEY` record back to its object, every field checked."""

    def shape_of(n_items: int) -> list:
        shape = obj['shape']
        if not isinstance(shape, (list, tuple)) or not all(
                isinstance(x, int) and x >= 0 for x in shape) or \
                int(np.prod(shape, dtype=np.int64)) != n_items:
            raise CheckpointError(f'{path}: shape {shape!r} does not fit '
                                  f'{n_items} item(s)')
        return list(shape)

    def items_of() -> list:
        items = obj['items']
        if not isinstance(items, list):
            raise CheckpointError(f'{path}: items is {type(items).__name__}, '
                                  'expected a list')
        return items

    if kind == 'HistoryBuffer':
        max_length = obj['max_length']
        logs = [float(v) for v in obj['log_history']]
        counts = [float(v) for v in obj['count_history']]
        if not isinstance(max_length, int) or max_length < 1:
            raise CheckpointError(f'{path}: max_length {max_length!r} is not a '
                                  'positive integer')
        buf = HistoryBuffer(max_length=max_length)
        buf._log_history = np.asarray(logs)
        buf._count_history = np.asarray(counts)
        return buf
    if kind == 'ndarray':
        data, dtype = obj['data'], np.dtype(obj['dtype'])
        if not isinstance(data, torch.Tensor) or dtype.kind not in 'biufc?':
            raise CheckpointError(
                f'{path}: expected a tensor and a numeric dtype, got '
                f'{type(data).__name__} and {dtype}')
        return data.numpy().astype(dtype)
    if kind == 'ndarray_str':
        items, dtype = items_of(), np.dtype(obj['dtype'])
        if dtype.kind not in 'US' or dtype.itemsize > 4 * _MAX_STR_WIDTH or \
                not all(isinstance(v, (str, bytes)) for v in items):
            raise CheckpointError(f'{path}: expected strings of a string dtype '
                                  f'up to {_MAX_STR_WIDTH} wide, got {dtype}')
        return np.asarray(items, dtype=dtype).reshape(shape_of(len(items)))
    if kind == 'ndarray_object':
        items = [from_weights_only(v, f'{path}[{i}]')
                 for i, v in enumerate(items_of())]
        arr = np.empty(len(items), dtype=object)
        arr[:] = items
        return arr.reshape(shape_of(len(items)))
    if kind == 'set':
        return {from_weights_only(v, f'{path}[{i}]')
                for i, v in enumerate(items_of())}
    raise CheckpointError(f'{path}: unknown {TYPE_KEY} {kind!r}; expected one '
                          "of 'HistoryBuffer', 'ndarray', 'ndarray_str', "
                          "'ndarray_object', 'set'")


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
        mmap: bool = False,
        verify: bool = True) -> Any:
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
        verify (bool): First verify the file with :func:`check_checkpoint_file`
            (a zip checkpoint's CRC-32 of every member: torch itself reads a
            tensor with a flipped byte without noticing). Every reader of
            checkpoints and galleries does; only a caller that has just
            verified the file passes False.

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
    if verify:
        check_checkpoint_file(filename, read_legacy=False)
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
    return from_weights_only(ckpt, f'{filename}: checkpoint') if decode \
        else ckpt


def _check_legacy_header(path: str) -> None:
    """The legacy torch format starts with a pickled magic number; check it.

    Only opcodes are parsed (:func:`pickletools.genops`), nothing is unpickled.
    """
    from torch.serialization import MAGIC_NUMBER
    with open(path, 'rb') as f:
        head = f.read(64)
    try:
        ops = []
        for op, arg, _ in pickletools.genops(io.BytesIO(head)):
            ops.append((op.name, arg))
            if op.name == 'STOP':
                break
    except Exception:  # noqa: BLE001  (genops raises ValueError and others)
        ops = []
    values = [arg for name, arg in ops if name not in ('PROTO', 'STOP')]
    if values != [MAGIC_NUMBER]:
        raise CheckpointError(
            f'{path}: neither a torch zip checkpoint nor a legacy torch file '
            f'(it starts with {head[:8].hex(" ")}); the file is damaged or of '
            'another kind')


def check_checkpoint_file(path: str, read_legacy: bool = True,
                          unpickle: bool = False) -> None:
    """Verify that ``path`` is a complete, undamaged checkpoint (or gallery) file.

    torch's zip checkpoints are checked for their central directory (missing when a
    write was cut short), every member's local header and CRC-32, without
    unpickling anything: one flipped byte inside a tensor fails its member's CRC.
    A file in the legacy (pre-1.6) format must start with torch's magic number and
    is then read once with the weights-only loader, the only way to see that its
    tensor data is complete. ``--resume``, ``load_from``, ``tools/test.py``,
    ``tools/calibrate.py``, ``tools/infer.py``, ``FaceRecognizer``, ``FaceGallery``,
    ``tools/deployment/export_onnx.py`` and the model converters all verify through
    here (:func:`safe_load_checkpoint` calls it), ``--resume``, ``load_from``,
    ``tools/test.py`` and ``tools/calibrate.py`` before their runner is built
    (:func:`~oaml_mm.apis.runner_setup.build_runner`).

    Args:
        path (str): The checkpoint.
        read_legacy (bool): Read a legacy-format file once to see its data is
            complete (False: only its header; the caller reads it next).
        unpickle (bool): Also unpickle a zip checkpoint with the weights-only
            loader, its tensor data memory-mapped (not read), so a file that
            names a non-data global is refused too, at the cost of reading
            ``data.pkl`` only. A legacy file is unpickled when
            ``read_legacy`` is set.

    Raises:
        CheckpointError: The file is missing, empty, truncated or damaged.
        UnsafeCheckpointError: A legacy file (or with ``unpickle``, any file)
            names a global that is not data.
    """
    path = str(path)
    if not osp.isfile(path):
        raise CheckpointError(f'{path}: no such checkpoint file')
    if osp.getsize(path) == 0:
        raise CheckpointError(f'{path}: empty checkpoint file (interrupted '
                              'write?)')
    with open(path, 'rb') as f:
        head = f.read(2)
    # A zip cut short has lost its central directory but still starts with PK; a
    # zip whose first bytes were zeroed still has its central directory.
    if head != b'PK' and not zipfile.is_zipfile(path):
        try:
            _check_legacy_header(path)
        except CheckpointError:
            # A raw pickle naming a payload is reported as unsafe, not damaged.
            safe_load_checkpoint(path, decode=False, verify=False)
            raise
        if read_legacy:
            safe_load_checkpoint(path, decode=False, verify=False)
        return
    try:
        with zipfile.ZipFile(path) as z:
            if not any(n == 'data.pkl' or n.endswith('/data.pkl')
                       for n in z.namelist()):
                raise CheckpointError(f'{path}: zip file without data.pkl; '
                                      'not a torch checkpoint')
            bad = z.testzip()
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001  (zipfile raises many types)
        raise CheckpointError(
            f'{path}: incomplete or damaged checkpoint (truncated write?); '
            'expected a readable PyTorch checkpoint (torch.save zip): '
            f'{type(e).__name__}: {e}') from None
    if bad is not None:
        raise CheckpointError(f'{path}: member {bad!r} fails its CRC check; '
                              'the file is damaged')
    if unpickle:
        safe_load_checkpoint(path, decode=False, verify=False, mmap=True)


def resolve_last_checkpoint(work_dir: str) -> Tuple[Optional[str], str]:
    """The checkpoint ``work_dir/last_checkpoint`` names, as it applies to THIS folder.

    mmengine stores an absolute path. A work dir that was copied or moved still
    names the original place, where another run's weights may sit now. So the
    work dir's own file of the same name wins whenever it exists; the stored path
    is followed only when it lies inside ``work_dir`` (symbolic links resolved).

    Args:
        work_dir (str): A training work directory.

    Returns:
        tuple: ``(path, note)``. ``path`` is the checkpoint to use (it may not
        exist when it lies inside the work dir but was deleted), or None when
        there is no ``last_checkpoint``, it is empty, or it names a file outside
        ``work_dir`` that has no copy beside it; ``note`` says why in that last
        case (else '').
    """
    work_dir = osp.abspath(str(work_dir))
    marker = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(marker):
        return None, ''
    with open(marker, 'rb') as f:
        named = f.read().decode('utf-8', 'replace').strip()
    if not named:
        return None, ''
    own = osp.join(work_dir, osp.basename(named))
    if osp.isfile(own):
        return own, ''
    stored = named if osp.isabs(named) else osp.join(work_dir, named)
    real_dir = osp.realpath(work_dir)
    real = osp.realpath(stored)
    if osp.commonpath([real_dir, real]) == real_dir:
        return stored, ''
    return None, (f'{marker} names {named}, which lies outside this work dir '
                  f'(copied or moved from elsewhere?), and {work_dir} holds no '
                  f'{osp.basename(named)}; another run\'s weights are not used')


def state_dict_mismatch(state: Dict[str, torch.Tensor],
                        own: Dict[str, torch.Tensor],
                        limit: int = 8) -> str:
    """What keeps ``state`` from loading strictly into a model whose state is ``own``.

    Args:
        state (dict): The checkpoint's state dict.
        own (dict): The model's ``state_dict()`` (the expected keys and shapes).
        limit (int): Keys named per kind.

    Returns:
        str: ``'missing keys: ...; unexpected keys: ...; shape mismatches: ...'``
        (only the kinds present), or '' when it loads exactly.
    """
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f'{k}: checkpoint {tuple(state[k].shape)} vs config '
                    f'{tuple(own[k].shape)}' for k in set(own) & set(state)
                    if tuple(state[k].shape) != tuple(own[k].shape))
    parts = []
    for name, keys in (('missing keys', missing),
                       ('unexpected keys', unexpected),
                       ('shape mismatches', shapes)):
        if keys:
            more = f' (+{len(keys) - limit} more)' if len(keys) > limit else ''
            parts.append(f'{name}: {", ".join(keys[:limit])}{more}')
    return '; '.join(parts)


def check_checkpoint_fits(path: str, ckpt: Any, model: torch.nn.Module,
                          ignore: Tuple[str, ...] = ('head', )) -> None:
    """Refuse a checkpoint that would load only partly into ``model``.

    mmengine's ``load_from`` loads what matches and keeps the rest at its
    initial values (a config of another model size, a backbone-only file);
    whatever then runs on the model measures random weights. Used by
    ``tools/calibrate.py`` before its validation pass.

    Args:
        path (str): The checkpoint, for the message.
        ckpt: The loaded checkpoint (a dict with ``state_dict``, or a state dict).
        model (nn.Module): The model built from the config.
        ignore (tuple[str]): Top-level parts left out of the comparison on
            both sides (the margin head serves training only).

    Raises:
        CheckpointError: Missing or unexpected keys or shape mismatches, all
            named (:func:`state_dict_mismatch`).
    """
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f'{path}: holds no state_dict of tensors')
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    own = {k: v for k, v in model.state_dict().items()
           if k.split('.', 1)[0] not in ignore}
    state = {k: v for k, v in fill_batchnorm_counters(state, own).items()
             if k.split('.', 1)[0] not in ignore}
    problems = state_dict_mismatch(state, own)
    if problems:
        raise CheckpointError(
            f'{path}: does not fit the model of the config (a config of '
            'another model size, or a backbone-only checkpoint?); '
            f'{problems}. Nothing was written')


def fill_batchnorm_counters(state: Dict[str, torch.Tensor],
                            own: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Add the BatchNorm ``num_batches_tracked`` counters a state dict lacks.

    Checkpoints saved before torch 0.4.1 and weights converted from MXNet have
    none. The counter only matters for ``momentum=None`` training; inference and
    fine-tuning read the running statistics, which such files do hold. A counter
    is added (0) only where the model has one and the file holds that
    BatchNorm's ``running_mean``.

    Args:
        state (dict): The checkpoint's state dict (not modified).
        own (dict): The model's ``state_dict()``.

    Returns:
        dict: ``state`` with the counters added.
    """
    out = dict(state)
    for key, value in own.items():
        if key.endswith('.num_batches_tracked') and key not in out:
            prefix = key[:-len('num_batches_tracked')]
            if prefix + 'running_mean' in out:
                out[key] = torch.zeros_like(value)
    return out


def user_file_mode() -> int:
    """The mode a new file gets under the user's umask (``0o666 & ~umask``).

    ``tempfile.mkstemp`` creates 0600 files; a file written through one and
    renamed into place must be given this mode, or another account (a search
    service) cannot read what the user shared.
    """
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_save(obj: Any, filename: str,
                encode: bool = True,
                saver: Optional[Callable[[Any, Any], None]] = None) -> None:
    """Save ``obj`` so that ``filename`` is either the old file or the whole new one.

    The data is written to a temporary file in the same folder, flushed to disk,
    given the user's usual file mode (:func:`user_file_mode`) and renamed over
    ``filename``; a failed write (disk full) removes the temporary file and leaves
    ``filename`` unchanged. A symbolic link is resolved first, so the file it
    points to is replaced and the link stays a link.

    Args:
        obj: What to save.
        filename (str): Destination path.
        encode (bool): Apply :func:`to_weights_only` first.
        saver (callable, optional): ``saver(obj, file)``; defaults to ``torch.save``.

    Raises:
        OutputPathError: The file cannot be written (disk full, no permission);
            names the path, ``errno`` kept; nothing was written under its name.
    """
    filename = str(filename)
    if osp.islink(filename):
        filename = osp.realpath(filename)
    folder = osp.dirname(osp.abspath(filename))
    if encode:
        obj = to_weights_only(obj)
    saver = saver or torch.save
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=osp.basename(filename) + '.', suffix='.tmp', dir=folder)
        with os.fdopen(fd, 'wb') as f:
            saver(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, user_file_mode())
        os.replace(tmp, filename)
    except BaseException as e:
        if tmp is not None and osp.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and not isinstance(e, OutputPathError):
            err = OutputPathError(
                f'{filename}: cannot write ({e.strerror or e}); nothing was '
                'written under this name, an existing file there is unchanged')
            err.errno = e.errno
            raise err from None
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
