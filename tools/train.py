"""Train a face recognition model with oaml_mm.

Examples:
    python tools/train.py configs/synthface/oaml_ir18_synthface.py
    python tools/train.py CONFIG --resume     # latest checkpoint in the work dir
    python tools/train.py CONFIG --resume work_dirs/x/epoch_3.pth
    torchrun --nproc_per_node 2 tools/train.py CONFIG --launcher pytorch
"""
import argparse
import importlib.util
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

from mmengine.config import Config

from oaml_mm.apis.runner_setup import parse_launcher_args


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
    return parse_launcher_args(parser, argv)


def merge_args(cfg: Config, args) -> Config:
    """Apply the command-line arguments to ``cfg``."""
    from oaml_mm.apis.training import apply_train_options
    from oaml_mm.errors import ConfigError
    try:
        apply_train_options(cfg, args.config, args.work_dir, args.amp,
                            args.no_validate, args.resume, args.auto_scale_lr,
                            args.launcher)
    except ConfigError as e:
        sys.exit(str(e))
    if args.cfg_options is not None:
        # data_root=... also moves the copies the data set configs made of it.
        from oaml_mm.utils import merge_cfg_options
        merge_cfg_options(cfg, args.cfg_options)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    import oaml_mm  # noqa: F401  (registers the components)
    from oaml_mm.apis.runner_setup import exit_on_error
    from oaml_mm.apis.training import train_model
    from oaml_mm.utils import (close_process_group, exit_with_launcher,
                               load_config)
    if args.launcher == 'pytorch':
        # A kill -9 of torchrun (tools/dist_train.sh) must not leave ranks running.
        exit_with_launcher()
    # Bad input, an unusable work dir or diverged training: one line.
    with exit_on_error():
        cfg = merge_args(load_config(args.config), args)
        train_model(cfg)
        close_process_group()


if __name__ == '__main__':
    main()
