"""Evaluate a trained face model.

Examples:
    python tools/test.py configs/oaml/ir50-oaml_test-ijbc.py \
        work_dirs/ir50-oaml_4xb128_ms1mv2/epoch_26.pth --out metrics.json
    tools/dist_test.sh CONFIG CHECKPOINT 4
"""
import argparse
import importlib.util
import json
import os
import os.path as osp
import pickle
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

from mmengine.config import DictAction
from mmengine.runner import Runner


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a face model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and results')
    parser.add_argument(
        '--out', help='write the metrics as JSON to this file '
        '(keys `{dataset}/{branch}/{metric}`)')
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


def main(argv=None):
    args = parse_args(argv)
    import oaml_mm  # noqa: F401  (registers the components)
    from oaml_mm.errors import OAMLError
    from oaml_mm.registry import RUNNERS
    from oaml_mm.utils import (exit_with_launcher, load_config,
                               merge_cfg_options)
    if args.launcher == 'pytorch':
        # A kill -9 of torchrun (tools/dist_test.sh) must not leave ranks running.
        exit_with_launcher()
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'{args.checkpoint}: no such checkpoint file')
    if args.out:
        # Checked before the evaluation, whose results a late write error loses.
        from oaml_mm.utils import check_output_file
        try:
            check_output_file(args.out, '--out')
            check_output_file(osp.splitext(args.out)[0] + '.csv',
                              'the CSV next to --out')
        except OAMLError as e:
            print(f'error: {e}', file=sys.stderr)
            raise SystemExit(2)
    try:
        cfg = load_config(args.config)
        if args.cfg_options is not None:
            # data_root=... also moves the copies the data set configs made
            # of it; a type outside the registries is refused.
            merge_cfg_options(cfg, args.cfg_options)
    except OAMLError as e:
        raise SystemExit(f'{type(e).__name__}: {e}')
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    cfg.resume = False
    # Testing never uses the margin head; a sharded one (PartialFCHead) would
    # hold every class centre in each process: not built.
    from oaml_mm.models.heads import without_sharded_head
    cfg.model = without_sharded_head(cfg.model)
    try:
        if 'runner_type' in cfg:
            runner = RUNNERS.build(cfg)
        else:
            runner = Runner.from_cfg(cfg)
        # mmengine's load_from loads what matches and leaves the rest at its
        # initial values (a warning in the log): the figures would be those
        # of partly random weights.
        from oaml_mm.utils.checkpoint import (check_checkpoint_fits,
                                              safe_load_checkpoint)
        check_checkpoint_fits(args.checkpoint,
                              safe_load_checkpoint(args.checkpoint,
                                                   decode=False),
                              getattr(runner.model, 'module', runner.model))
        metrics = runner.test()
    except OAMLError as e:
        raise SystemExit(f'{type(e).__name__}: {e}')
    except pickle.UnpicklingError as e:
        raise SystemExit('refused to load a checkpoint that holds objects '
                         'other than weights (it could run code): '
                         f'{str(e).splitlines()[0]}')
    if runner.rank == 0:
        # Table on stdout, CSV, ROC PNGs (work dir + visualizer backends).
        from oaml_mm.evaluation import report_test_results
        report_test_results(metrics, runner.work_dir,
                            runner.test_loop.evaluator.metrics,
                            runner.visualizer, args.out)
    if args.out and runner.rank == 0:
        out = {k: (float(v) if isinstance(v, (int, float)) else v)
               for k, v in metrics.items()}
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(out, f, indent=2, sort_keys=True)
        print(f'metrics written to {args.out}')
    from oaml_mm.utils import close_process_group
    close_process_group()
    return metrics


if __name__ == '__main__':
    main()
