"""Train from a config: the steps of ``tools/train.py`` beyond its argument parsing.

:func:`apply_train_options` applies the command line's choices to a loaded config
(work dir, ``--amp``, ``--no-validate``, ``--resume``, ``--auto-scale-lr``,
launcher); :func:`train_model` checks the config, takes the work dir's lock and runs
the runner's training (docs/get_started.md, docs/reliability.md).
"""
import os.path as osp
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.runner import Runner

from oaml_mm.engine.runner import WorkDirLock, check_train_config
from oaml_mm.engine.runner.oaml_runner import check_work_dir
from oaml_mm.engine.runner.work_dir_lock import launcher_rank
from oaml_mm.errors import ConfigError
from .runner_setup import build_runner, default_work_dir

__all__ = ['AMP_TYPES', 'apply_amp', 'apply_train_options', 'train_model']

#: ``--amp``: optimizer wrapper type -> (with CUDA, without). The non-finite
#: guard (``GuardedOptimWrapper``, every shipped config) stays on in both.
AMP_TYPES = {
    'OptimWrapper': ('AmpOptimWrapper', 'BF16AutocastOptimWrapper'),
    'AmpOptimWrapper': ('AmpOptimWrapper', 'BF16AutocastOptimWrapper'),
    'BF16AutocastOptimWrapper': ('AmpOptimWrapper',
                                 'BF16AutocastOptimWrapper'),
    'GuardedOptimWrapper': ('GuardedAmpOptimWrapper',
                            'GuardedBF16AutocastOptimWrapper'),
    'GuardedAmpOptimWrapper': ('GuardedAmpOptimWrapper',
                               'GuardedBF16AutocastOptimWrapper'),
    'GuardedBF16AutocastOptimWrapper': ('GuardedAmpOptimWrapper',
                                        'GuardedBF16AutocastOptimWrapper'),
}


def apply_amp(cfg: Config) -> str:
    """Switch the optimizer wrapper to mixed precision; return the new type.

    fp16 AMP with a dynamic loss scale where CUDA is available, else bfloat16
    autocast on the CPU (printed, since the user asked for fp16).

    Args:
        cfg (Config): A config with ``optim_wrapper``; changed in place.

    Returns:
        str: The wrapper type now set (:data:`AMP_TYPES`).

    Raises:
        ConfigError: The wrapper type has no mixed-precision counterpart.
    """
    optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if optim_wrapper not in AMP_TYPES:
        raise ConfigError(f'--amp: the config uses optim_wrapper type '
                          f'{optim_wrapper!r}; set mixed precision in the '
                          'config instead.')
    gpu_type, cpu_type = AMP_TYPES[optim_wrapper]
    if torch.cuda.is_available():
        cfg.optim_wrapper.type = gpu_type
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    else:
        print('--amp: no CUDA device; fp16 AMP needs a GPU, so training '
              'runs with bfloat16 autocast on the CPU instead.')
        cfg.optim_wrapper.type = cpu_type
    return cfg.optim_wrapper.type


def apply_train_options(cfg: Config,
                        config: str,
                        work_dir: Optional[str] = None,
                        amp: bool = False,
                        no_validate: bool = False,
                        resume: Optional[str] = None,
                        auto_scale_lr: bool = False,
                        launcher: str = 'none') -> Config:
    """Apply ``tools/train.py``'s options (not ``--cfg-options``) to ``cfg``.

    Args:
        cfg (Config): The loaded config; changed in place.
        config (str): Its file path (names the default work dir).
        work_dir (str, optional): ``--work-dir``.
        amp (bool): ``--amp`` (:func:`apply_amp`).
        no_validate (bool): Drop the validation loop, loader and evaluator.
        resume (str, optional): ``'auto'`` resumes from the work dir's latest
            checkpoint, a path from that checkpoint; None starts afresh.
        auto_scale_lr (bool): Scale the learning rate with the total batch
            size (needs ``auto_scale_lr.base_batch_size`` in the config).
        launcher (str): ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.

    Returns:
        Config: ``cfg``.

    Raises:
        ConfigError: ``--amp`` with a wrapper type it cannot switch,
            ``--resume`` naming no file, ``--auto-scale-lr`` without
            ``auto_scale_lr.base_batch_size``; the message starts with the
            option.
    """
    default_work_dir(cfg, config, work_dir)
    if amp:
        apply_amp(cfg)
    if no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    if resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif resume is not None:
        if not osp.isfile(resume):
            raise ConfigError(f'--resume: {resume}: no such checkpoint file')
        cfg.resume = True
        cfg.load_from = resume
    if auto_scale_lr:
        if 'auto_scale_lr' not in cfg or \
                'base_batch_size' not in cfg.auto_scale_lr:
            raise ConfigError('--auto-scale-lr: the config has no '
                              '`auto_scale_lr = dict(base_batch_size=...)`')
        cfg.auto_scale_lr.enable = True
    cfg.launcher = launcher
    return cfg


def train_model(cfg: Config) -> Runner:
    """Check ``cfg``, lock its work dir (rank 0) and train.

    The work dir is checked and locked before the runner dumps the config and
    opens its log folder there, so a refused second run leaves the first's
    files; ``OAMLRunner.train()`` uses this lock instead of taking a second
    one. Remote work dirs (``scheme://``) are neither checked nor locked.

    Args:
        cfg (Config): A complete training config (:func:`apply_train_options`).

    Returns:
        mmengine.runner.Runner: The runner, trained.

    Raises:
        ConfigError: The loader or loop settings cannot train
            (:func:`~oaml_mm.engine.runner.check_train_config`).
        WorkDirError: Another run holds the work dir, or it is unusable.
        NonFiniteLossError: Training diverged.
    """
    check_train_config(cfg.get('train_dataloader'), cfg.get('train_cfg'))
    lock = None
    try:
        rank = launcher_rank(cfg.get('launcher', 'none'))
        if rank == 0 and '://' not in str(cfg.work_dir):
            check_work_dir(osp.abspath(cfg.work_dir))
            lock = WorkDirLock(cfg.work_dir)
            lock.acquire()
        runner = build_runner(cfg)
        runner.work_dir_lock = lock
        runner.train()
    finally:
        if lock is not None:
            lock.release()
    return runner
