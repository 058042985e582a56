"""The steps ``tools/train.py``, ``tools/test.py`` and ``tools/calibrate.py`` share.

Each tool loads a config, applies its command line, builds MMEngine's runner and
loads a checkpoint into it; these functions are those steps, callable from a script
too: :func:`prepare_config`, :func:`build_runner`, :func:`check_loaded_checkpoint`
and :func:`exit_on_error`, which turns the errors a user can fix into one line
instead of a traceback (docs/reliability.md). :func:`parse_launcher_args` ends the
command line of the tools a launcher starts (``tools/train.py``, ``tools/test.py``).
"""
import argparse
import contextlib
import os
import os.path as osp
import pickle
from typing import Iterator, Optional, Sequence, Union

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from oaml_mm.engine.runner.oaml_runner import find_resumable_checkpoint
from oaml_mm.errors import ConfigError, OAMLError
from oaml_mm.registry import RUNNERS
from oaml_mm.utils import CfgOptionsAction, load_config
from oaml_mm.utils.checkpoint import (check_checkpoint_file,
                                      check_checkpoint_fits,
                                      safe_load_checkpoint)

__all__ = ['default_work_dir', 'parse_cfg_options', 'parse_launcher_args',
           'prepare_config', 'build_runner', 'check_runner_checkpoint',
           'check_loaded_checkpoint', 'exit_on_error']


def default_work_dir(cfg: Config, config: str,
                     work_dir: Optional[str] = None) -> str:
    """Set ``cfg.work_dir`` as the tools do and return it.

    Args:
        cfg (Config): The loaded config; changed in place.
        config (str): Its file path, which names the default folder.
        work_dir (str, optional): ``--work-dir``; wins over the config's.

    Returns:
        str: ``work_dir``, else the config's ``work_dir``, else
        ``./work_dirs/<config file name without extension>``.
    """
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config))[0])
    return cfg.work_dir


def parse_cfg_options(
        cfg_options: Union[None, dict, Sequence[str]]) -> Optional[dict]:
    """``--cfg-options`` as a dict, from a dict or from ``'key=value'`` strings.

    Strings are parsed as mmengine's ``DictAction`` parses the command line
    (``'a=1,2'`` -> ``[1, 2]``, ``'k=[1,(2,3)]'`` -> ``[1, (2, 3)]``).

    Args:
        cfg_options: None, a ``{key: value}`` dict (returned as it is), or a
            sequence of ``'key=value'`` strings (e.g. ``['val_data_root=D']``).

    Returns:
        dict or None: The options.

    Raises:
        ConfigError: An item is not a ``'key=value'`` string, or
            ``cfg_options`` is of another type.
    """
    if cfg_options is None or isinstance(cfg_options, dict):
        return cfg_options
    if isinstance(cfg_options, str) or not isinstance(cfg_options,
                                                      (list, tuple)):
        raise ConfigError(
            f'cfg_options {cfg_options!r}: expected a dict or a list of '
            "'key=value' strings (e.g. ['val_data_root=data/sf'])")
    parsed = {}
    for item in cfg_options:
        key, sep, value = item.partition('=') if isinstance(item, str) \
            else ('', '', '')
        if not sep or not key:
            raise ConfigError(f'cfg_options item {item!r}: expected a '
                              "'key=value' string (e.g. 'val_data_root=D')")
        parsed[key] = DictAction._parse_iterable(value)
    return parsed


def parse_launcher_args(parser: argparse.ArgumentParser,
                        argv: Optional[Sequence[str]] = None
                        ) -> argparse.Namespace:
    """Add the arguments a launched runner tool takes, parse, export the rank.

    The OpenMMLab tool convention that ``tools/dist_*.sh``, ``tools/slurm_*.sh``
    and ``torchrun`` rely on: ``--cfg-options`` (:class:`~oaml_mm.utils.
    CfgOptionsAction`), ``--launcher`` and ``--local_rank`` / ``--local-rank``
    (passed by ``torch.distributed.launch``), which is exported as the
    ``LOCAL_RANK`` environment variable unless the launcher set it.

    Args:
        parser (argparse.ArgumentParser): The tool's parser with its own
            arguments; these three are added after them (``--help`` order).
        argv (Sequence[str], optional): The command line; None: ``sys.argv``.

    Returns:
        argparse.Namespace: The parsed arguments (``cfg_options``: dict or
        None; ``launcher``: ``'none'`` (default), ``'pytorch'``, ``'slurm'``
        or ``'mpi'``; ``local_rank``: int, default 0).

    Raises:
        SystemExit: argparse's usage error (status 2), or ``--help`` (0).
    """
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=CfgOptionsAction,
        help='override settings in the config, key=value (xxx=yyy format)')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def prepare_config(config: str,
                   cfg_options: Union[None, dict, Sequence[str]] = None,
                   work_dir: Optional[str] = None,
                   launcher: Optional[str] = None) -> Config:
    """Load ``config`` with the ``--cfg-options``, work dir and launcher of a tool.

    Args:
        config (str): Config file path.
        cfg_options (dict or list[str], optional): ``--cfg-options``: a dict
            as mmengine's ``DictAction`` parses them, or the ``'key=value'``
            strings of the command line (:func:`parse_cfg_options`);
            ``data_root=...`` also moves the copies the data set configs made
            of it (:func:`~oaml_mm.utils.merge_cfg_options`).
        work_dir (str, optional): ``--work-dir`` (:func:`default_work_dir`).
        launcher (str, optional): ``'none'``, ``'pytorch'``, ``'slurm'`` or
            ``'mpi'``; None keeps the config's.

    Returns:
        Config: The config, overrides applied.

    Raises:
        ConfigError: The file cannot be read, an option is not ``key=value``,
            or an override names a type outside the registries (the message
            names file and line or key).
    """
    cfg = load_config(config, parse_cfg_options(cfg_options))
    if launcher is not None:
        cfg.launcher = launcher
    default_work_dir(cfg, config, work_dir)
    return cfg


def check_runner_checkpoint(cfg: Config) -> None:
    """Refuse, before a runner is built, a checkpoint it could not load.

    The runner loads ``load_from`` (``tools/test.py``, ``tools/calibrate.py``,
    ``--resume PATH``) or, with ``resume=True`` alone (``--resume``), the work
    dir's latest checkpoint only after it has built the model, the data sets
    and the hooks and logged all of it; a truncated or damaged file would
    fail there. Checked here: the zip's central directory, every member's
    CRC-32 and the weights-only unpickling of ``data.pkl`` with the tensor
    data memory-mapped
    (:func:`~oaml_mm.utils.checkpoint.check_checkpoint_file` with
    ``unpickle=True``). That reads the file's bytes once but builds no
    tensor, so a multi-GB checkpoint is not loaded twice; the runner verifies
    it again when it loads it. Remote paths (``scheme://``) are not checked.

    Args:
        cfg (Config): The config the runner is built from.

    Raises:
        CheckpointError: ``load_from`` is missing, truncated or damaged (the
            message names the file and that a readable PyTorch checkpoint was
            expected); with ``resume=True`` and no ``load_from``, checkpoints
            exist in the work dir but none verifies.
        UnsafeCheckpointError: ``load_from`` names a global that is not data.
    """
    load_from = cfg.get('load_from', None)
    if load_from is not None:
        if '://' not in str(load_from):
            check_checkpoint_file(str(load_from), unpickle=True)
        return
    work_dir = cfg.get('work_dir', None)
    if cfg.get('resume', False) is True and work_dir is not None and \
            '://' not in str(work_dir) and osp.isdir(work_dir):
        # Only whether one verifies: the runner picks it again and logs the
        # files it passed over in its own log.
        find_resumable_checkpoint(work_dir)


def build_runner(cfg: Config) -> Runner:
    """The config's runner: ``RUNNERS.build`` with ``runner_type``, else ``Runner``.

    The checkpoint the runner will load is checked first
    (:func:`check_runner_checkpoint`), so a damaged one stops here in one line.

    Args:
        cfg (Config): A complete MMEngine config.

    Returns:
        mmengine.runner.Runner: The runner (``OAMLRunner`` for the shipped
        configs), not yet started.

    Raises:
        CheckpointError: The checkpoint to load or resume from is missing,
            truncated or damaged (:func:`check_runner_checkpoint`).
    """
    check_runner_checkpoint(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def check_loaded_checkpoint(runner: Runner, checkpoint: str) -> None:
    """Refuse a checkpoint that loads only partly into the runner's model.

    mmengine's ``load_from`` loads what matches and leaves the rest at its
    initial values (a warning in the log): figures or thresholds computed then
    would be those of partly random weights.

    Args:
        runner (Runner): Built with ``load_from=checkpoint``.
        checkpoint (str): The checkpoint file.

    Raises:
        CheckpointError: Missing or unexpected keys or shape mismatches, named
            (:func:`~oaml_mm.utils.checkpoint.check_checkpoint_fits`); the file
            is not a checkpoint or fails its CRC check.
        pickle.UnpicklingError: It holds objects other than weights.
    """
    model = getattr(runner.model, 'module', runner.model)
    check_checkpoint_fits(checkpoint,
                          safe_load_checkpoint(checkpoint, decode=False), model)


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """Turn an :class:`~oaml_mm.errors.OAMLError` into a one-line ``SystemExit``.

    Bad input, an unusable work dir, a checkpoint that does not fit or diverged
    training: the message says what and where; a traceback would only bury it.

    Raises:
        SystemExit: ``'<ErrorType>: <message>'`` for an ``OAMLError``;
            ``'refused to load a checkpoint that holds objects other than
            weights (it could run code): ...'`` for a
            ``pickle.UnpicklingError`` (the weights-only loader's refusal).
    """
    try:
        yield
    except OAMLError as e:
        raise SystemExit(f'{type(e).__name__}: {e}')
    except pickle.UnpicklingError as e:
        raise SystemExit('refused to load a checkpoint that holds objects '
                         'other than weights (it could run code): '
                         f'{str(e).splitlines()[0]}')
