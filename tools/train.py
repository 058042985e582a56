"""Train a face recognition model with oaml_mm.

Examples:
    python tools/train.py configs/synthface/oaml_ir18_synthface.py python tools/train.py
    CONFIG --resume                 # latest checkpoint in work dir python
    tools/train.py CONFIG --resume work_dirs/x/epoch_3.pth torchrun --nproc_per_node 2
    tools/train.py CONFIG --launcher pytorch
"""
import argparse
import importlib.util
import os
import os.path as osp
import runpy
import sys

if __name__ == '__main__':
    # glibc reads its malloc thresholds at start-up only: restart once with them,
    # before the heavy imports (oaml_mm/utils/malloc_tuning.py, standard library).
    # Found without importing oaml_mm, so it also works from an installed
    # package's oaml_mm/.mim/tools/ (mim train, docs/get_started.md).
    _spec = importlib.util.find_spec('oaml_mm')
    if _spec is not None and _spec.submodule_search_locations:
        _tuning = osp.join(list(_spec.submodule_search_locations)[0], 'utils',
                           'malloc_tuning.py')
        runpy.run_path(_tuning)['reexec_with_malloc_env']()

import torch
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

#: --amp: optimizer wrapper type -> (with CUDA, without). The non-finite guard
#: (GuardedOptimWrapper, every shipped config) stays on in both.
_AMP_TYPES = {
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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a face model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or without a path from the '
        'latest checkpoint in the work directory')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision: fp16 AMP on GPU, bf16 autocast on CPU')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='do not evaluate checkpoints during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate linearly with the total batch size')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
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


def merge_args(cfg: Config, args) -> Config:
    """Apply the command-line arguments to ``cfg``."""
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper not in _AMP_TYPES:
            sys.exit(f'--amp: the config uses optim_wrapper type '
                     f'{optim_wrapper!r}; set mixed precision in the config '
                     'instead.')
        gpu_type, cpu_type = _AMP_TYPES[optim_wrapper]
        if torch.cuda.is_available():
            cfg.optim_wrapper.type = gpu_type
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        else:
            print('--amp: no CUDA device; fp16 AMP needs a GPU, so training '
                  'runs with bfloat16 autocast on the CPU instead.')
            cfg.optim_wrapper.type = cpu_type

    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            sys.exit(f'--resume: {args.resume}: no such checkpoint file')
        cfg.resume = True
        cfg.load_from = args.resume

    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or \
                'base_batch_size' not in cfg.auto_scale_lr:
            sys.exit('--auto-scale-lr: the config has no '
                     '`auto_scale_lr = dict(base_batch_size=...)`')
        cfg.auto_scale_lr.enable = True

    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        # data_root=... also moves the copies the data set configs made of it.
        from oaml_mm.utils import merge_cfg_options
        merge_cfg_options(cfg, args.cfg_options)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    import pickle

    import oaml_mm  # noqa: F401  (registers the components)
    from oaml_mm.engine.runner import WorkDirLock, check_train_config
    from oaml_mm.engine.runner.oaml_runner import check_work_dir
    from oaml_mm.engine.runner.work_dir_lock import launcher_rank
    from oaml_mm.errors import OAMLError
    from oaml_mm.registry import RUNNERS
    from oaml_mm.utils import exit_with_launcher, load_config
    if args.launcher == 'pytorch':
        # A kill -9 of torchrun (tools/dist_train.sh) must not leave ranks running.
        exit_with_launcher()
    lock = None
    try:
        cfg = load_config(args.config)
        cfg = merge_args(cfg, args)
        check_train_config(cfg.get('train_dataloader'), cfg.get('train_cfg'))
        if launcher_rank(cfg.launcher) == 0 and '://' not in str(cfg.work_dir):
            # Before the runner dumps the config and opens its log folder in
            # the work dir: a refused second run must leave the first's files.
            check_work_dir(osp.abspath(cfg.work_dir))
            lock = WorkDirLock(cfg.work_dir)
            lock.acquire()
        if 'runner_type' in cfg:
            runner = RUNNERS.build(cfg)
        else:
            runner = Runner.from_cfg(cfg)
        # OAMLRunner.train() uses this lock instead of taking a second one.
        runner.work_dir_lock = lock
        runner.train()
        from oaml_mm.utils import close_process_group
        close_process_group()
    except OAMLError as e:
        # Bad input, an unusable work dir or diverged training: the message says
        # what and where; a traceback would only bury it.
        sys.exit(f'{type(e).__name__}: {e}')
    except pickle.UnpicklingError as e:
        sys.exit(f'refused to load a checkpoint that holds objects other than '
                 f'weights (it could run code): {str(e).splitlines()[0]}')
    finally:
        if lock is not None:
            lock.release()


if __name__ == '__main__':
    main()
