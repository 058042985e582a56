"""Evaluate a trained face model.

Examples:
    python tools/test.py configs/oaml/ir50-oaml_test-ijbc.py \
        work_dirs/ir50-oaml_4xb128_ms1mv2/epoch_26.pth --out metrics.json
    tools/dist_test.sh CONFIG CHECKPOINT 4
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

from oaml_mm.apis.runner_setup import parse_launcher_args


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a face model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and results')
    parser.add_argument(
        '--out', help='write the metrics as JSON to this file '
        '(keys `{dataset}/{branch}/{metric}`)')
    return parse_launcher_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    import oaml_mm  # noqa: F401  (registers the components)
    from oaml_mm.apis.evaluate import check_metric_outputs, evaluate_checkpoint
    from oaml_mm.apis.runner_setup import exit_on_error, prepare_config
    from oaml_mm.errors import OAMLError
    from oaml_mm.utils import close_process_group, exit_with_launcher
    if args.launcher == 'pytorch':
        # A kill -9 of torchrun (tools/dist_test.sh) must not leave ranks running.
        exit_with_launcher()
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'{args.checkpoint}: no such checkpoint file')
    try:
        check_metric_outputs(args.out)
    except OAMLError as e:
        print(f'error: {e}', file=sys.stderr)
        raise SystemExit(2)
    with exit_on_error():
        cfg = prepare_config(args.config, args.cfg_options, args.work_dir,
                             args.launcher)
        metrics = evaluate_checkpoint(cfg, args.checkpoint, args.out)
    close_process_group()
    return metrics


if __name__ == '__main__':
    main()
