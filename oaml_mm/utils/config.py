"""Config loading that names the file and line of what is wrong.

:meth:`mmengine.config.Config.fromfile` reports a bad config with whatever the failing
step raised: a ``SyntaxError`` without the file, a ``FileNotFoundError`` for a missing
``_base_`` without the config that named it, a ``UnicodeDecodeError`` with a byte
offset only, or a ``NameError`` deep inside mmengine's frames. :func:`load_config`
turns each of those into one :class:`~oaml_mm.errors.ConfigError` whose message starts
with ``<file>, line <n>:``, the form compilers and linters use, so editors and users
can jump to the fault. The error-reporting convention follows the project's
``oaml_mm.errors`` contract (``docs/architecture.md``).
"""
import ast
import os
import os.path as osp
import re
import traceback
from typing import Optional, Sequence

import mmengine
from mmengine.config import Config

from oaml_mm.errors import ConfigError
from .cfg_options import merge_cfg_options

__all__ = ['load_config', 'register_config_package', 'find_run_config']

_MMENGINE_DIR = osp.dirname(osp.abspath(mmengine.__file__))
_SYNTAX_MSG = re.compile(
    r'There are syntax errors in config file (?P<file>.+?): (?P<detail>.*)$',
    re.S)


def register_config_package() -> None:
    """Let mmengine resolve ``oaml_mm::`` config paths (``import oaml_mm`` calls it).

    mmengine resolves ``_base_ = ['oaml_mm::oaml/ir50-oaml_4xb128_ms1mv2.py']`` in the
    installed package's ``oaml_mm/.mim/configs/`` (which a wheel carries, setup.py),
    but only for packages listed in its ``MODULE2PACKAGE`` table; this adds oaml_mm
    there, and makes the lookup find the folder of the oaml_mm that is imported,
    also for an editable install (where ``.mim`` links to the checkout's
    ``configs/``). Idempotent.
    """
    import mmengine.config.config as mm_config
    from mmengine.config.utils import MODULE2PACKAGE
    MODULE2PACKAGE.setdefault('oaml_mm', 'oaml_mm')
    # mmengine finds the package folder through its distribution's location,
    # which for an editable install (pip install -e .) is site-packages, where
    # there is no oaml_mm/ folder: answer with the imported package's folder.
    lookup = mm_config.get_installed_path
    if getattr(lookup, 'oaml_mm_aware', False):
        return
    here = osp.dirname(osp.dirname(osp.abspath(__file__)))

    def get_installed_path(package: str) -> str:
        return here if package == 'oaml_mm' else lookup(package)

    get_installed_path.oaml_mm_aware = True
    mm_config.get_installed_path = get_installed_path


def _where(path: str, line: Optional[int], col: Optional[int] = None) -> str:
    out = str(path)
    if line is not None:
        out += f', line {line}'
        if col is not None:
            out += f', column {col}'
    return out


_BOM = b'\xef\xbb\xbf'


def _check_python_source(path: str, child: Optional[str] = None,
                         depth: int = 0) -> None:
    """Decode and parse a ``.py`` config; raise ConfigError with the position.

    Its local ``_base_`` files are checked too (a byte-order mark there would
    otherwise reach the user as mmengine's ``<unknown>, line 1``).
    """
    with open(path, 'rb') as f:
        raw = f.read()
    if raw.startswith(_BOM):
        # mmengine reads configs as plain UTF-8 (several readers, one of them
        # exec), so the mark cannot be stripped on the way in: say what it is.
        base = f' (base of {child})' if child else ''
        raise ConfigError(
            f'{path}{base}, line 1: starts with a UTF-8 byte-order mark (BOM, '
            'bytes EF BB BF, as some Windows editors save); save it as UTF-8 '
            'without BOM')
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b'\n') + 1
        raise ConfigError(
            f'{_where(path, line)}: byte {e.start} (0x{raw[e.start]:02x}) is '
            'not UTF-8; expected a UTF-8 text Python config') from None
    try:
        ast.parse(text, filename=path)
    except SyntaxError as e:
        raise ConfigError(
            f'{_where(path, e.lineno, e.offset)}: invalid Python syntax: '
            f'{e.msg}') from None
    except (ValueError, MemoryError, RecursionError) as e:
        # ast.parse raises ValueError for NUL bytes and RecursionError/MemoryError
        # for absurdly nested expressions.
        raise ConfigError(
            f'{path}: not a Python config: {type(e).__name__}: {e}') from None
    if depth < 16:
        for base in _local_bases(text, path):
            if osp.isfile(base):
                _check_python_source(base, child or path, depth + 1)


def _local_bases(text: str, path: str) -> list:
    """The ``_base_`` files a config names as literal relative or absolute paths."""
    names = []
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == '_base_'
                for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            names = [value] if isinstance(value, str) else list(value)
    return [osp.join(osp.dirname(path), n) for n in names
            if isinstance(n, str) and n.endswith('.py') and '::' not in n]


def _config_frame(exc: BaseException) -> Optional[traceback.FrameSummary]:
    """The innermost traceback frame that belongs to a config file, if any."""
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        fname = osp.abspath(frame.filename)
        if fname.startswith(_MMENGINE_DIR) or frame.filename.startswith('<'):
            continue
        if fname == osp.abspath(__file__):
            continue
        found = frame
    return found


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Load a config with :meth:`Config.fromfile`, reporting errors by file and line.

    Args:
        path (str): A ``.py``, ``.json`` or ``.yaml`` config file.
        cfg_options (dict, optional): ``--cfg-options`` overrides (``key=value``
            as mmengine's ``DictAction`` parses them), merged with
            :func:`~oaml_mm.utils.merge_cfg_options`: a data-root variable such as
            ``data_root`` also moves the copies the data set configs made of it.

    Returns:
        mmengine.config.Config: The loaded config, bases merged; the copies of
        variables the file changes of its bases (data roots,
        ``train_num_classes``, ``max_iters``) and an inherited schedule follow
        (:func:`~oaml_mm.utils.cfg_options.follow_bases`); then the overrides
        are applied.

    Raises:
        ConfigError: The file or one of its ``_base_`` files is missing, is not UTF-8,
            has a syntax error, or raised while it was evaluated. The message starts
            with ``<file>, line <n>:`` where the position is known.

    Examples:
        >>> cfg = load_config(  # doctest: +SKIP
        ...     'configs/synthface/oaml_ir18_synthface.py')
        >>> load_config('missing.py')
        Traceback (most recent call last):
        ...
        oaml_mm.errors.ConfigError: missing.py: no such config file
    """
    cfg = _load(str(path))
    if cfg_options:
        merge_cfg_options(cfg, cfg_options)
    return cfg


def _load(path: str) -> Config:
    if not osp.isfile(path):
        raise ConfigError(f'{path}: no such config file')
    if path.endswith('.py'):
        _check_python_source(path)
    try:
        cfg = Config.fromfile(path)
    except ConfigError:
        raise
    except FileNotFoundError as e:
        # mmengine's message names only the missing file (a _base_ entry).
        raise ConfigError(
            f'{path}: a file it refers to (a _base_ entry?) is missing: '
            f'{e}') from None
    except SyntaxError as e:
        m = _SYNTAX_MSG.match(str(e))
        if m:
            raise ConfigError(
                f'{m.group("file")}: invalid Python syntax (base of {path}): '
                f'{m.group("detail")}') from None
        raise ConfigError(
            f'{_where(e.filename or path, e.lineno, e.offset)}: invalid '
            f'syntax: {e.msg}') from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f'{path} (or one of its bases): byte {e.start} is not UTF-8: '
            f'{e.reason}') from None
    except Exception as e:  # noqa: BLE001  (a config is code: anything can fail)
        frame = _config_frame(e)
        if frame is not None:
            where = _where(frame.filename, frame.lineno)
            if osp.abspath(frame.filename) != osp.abspath(path):
                where += f' (base of {path})'
        else:
            where = path
        detail = str(e).strip().splitlines()
        raise ConfigError(
            f'{where}: {type(e).__name__}: '
            f'{detail[0] if detail else "(no message)"}') from None
    if path.endswith('.py'):
        # A child that sets data_root, train_num_classes or the training
        # length alone: the copies its bases made follow (cfg_options.py).
        from .cfg_options import follow_bases
        follow_bases(cfg, path)
    return cfg


_RUN_STAMP = re.compile(r'_\d{8}_\d{6}$')


def find_run_config(work_dir: str, checkpoint: Optional[str] = None,
                    keys: Sequence[str] = ('model', )) -> str:
    """The config a training run dumped into its work dir, chosen deterministically.

    mmengine's ``Runner`` dumps ``<work_dir>/<config name>.py``, but a later
    ``tools/test.py`` run on the same work dir dumps its own config beside it,
    and ``cp -r`` rewrites modification times, so "the newest ``*.py``" is not
    the training config. The choice, in order:

    1. the ``*.py`` named by the checkpoint's ``meta['experiment_name']``
       (``<config name>_<YYYYMMDD_HHMMSS>``);
    2. the ``*.py`` whose text is the checkpoint's ``meta['cfg']`` (what the
       runner dumped);
    3. the only ``*.py``, or the first by name when every candidate has the
       same ``keys`` (by default: builds the same ``model``).

    Args:
        work_dir (str): The ``--work-dir`` of ``tools/train.py``.
        checkpoint (str, optional): The run's checkpoint whose ``meta`` names
            the config (read memory-mapped, not verified: its reader checks it).
        keys (Sequence[str]): The settings that must agree for unnamed
            candidates to be interchangeable.

    Returns:
        str: Path of the chosen config.

    Raises:
        ConfigError: No ``*.py`` in the work dir, or several whose ``keys``
            differ and the checkpoint names none of them (the message lists
            the candidates).
    """
    work_dir = str(work_dir)
    names = sorted(f for f in os.listdir(work_dir) if f.endswith('.py')
                   and osp.isfile(osp.join(work_dir, f)))
    if not names:
        raise ConfigError(f'{work_dir}: no dumped config (*.py) found')
    if len(names) == 1:
        return osp.join(work_dir, names[0])
    meta = _checkpoint_meta(checkpoint)
    exp = meta.get('experiment_name')
    if isinstance(exp, str) and _RUN_STAMP.sub('', exp) + '.py' in names:
        return osp.join(work_dir, _RUN_STAMP.sub('', exp) + '.py')
    dumped = meta.get('cfg')
    if isinstance(dumped, str):
        same = [n for n in names
                if _read_text(osp.join(work_dir, n)) == dumped.strip()]
        if len(same) == 1:
            return osp.join(work_dir, same[0])
    loaded = [_load(osp.join(work_dir, n)) for n in names]
    parts = [[c.get(k) for k in keys] for c in loaded]
    if all(p == parts[0] for p in parts[1:]):
        return osp.join(work_dir, names[0])
    raise ConfigError(
        f'{work_dir}: {len(names)} configs that differ in '
        f'{"/".join(keys)} '
        f'({", ".join(names)}) and the checkpoint names none of them; pass '
        'the training config explicitly')


def _read_text(path: str) -> str:
    with open(path, 'rb') as f:
        return f.read().decode('utf-8', 'replace').strip()


def _checkpoint_meta(checkpoint: Optional[str]) -> dict:
    if not checkpoint or not osp.isfile(checkpoint):
        return {}
    from .checkpoint import safe_load_checkpoint
    try:
        ckpt = safe_load_checkpoint(checkpoint, mmap=True, verify=False)
    except Exception:  # noqa: BLE001  (its reader reports the damage)
        return {}
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    return meta if isinstance(meta, dict) else {}
