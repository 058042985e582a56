"""(Re)calibrate a trained model's decision on a validation split, without training.

Runs CONFIG's validation pairs (``val_dataloader``: the calibration split, e.g.
SynthFace's ``val/calib.bin``, or your own ``.bin`` of deployment-like pairs) through
CHECKPOINT's model; its ``ThresholdCalibrationHook`` picks every branch's threshold at
its FAR and, for a model with an occlusion head, fits the visibility-aware fusion
(docs/evaluation.md, "Visibility-aware fusion"). The result replaces
``meta['oaml_thresholds']`` of the checkpoint written to ``--out`` (default: the
checkpoint itself, rewritten atomically; a symbolic link is followed and the file
it names rewritten); the weights are copied unchanged. It refuses, with one line and
without writing anything: a checkpoint that does not load completely into CONFIG's
model (another model size, a backbone-only file: thresholds of random heads),
validation pairs that are all genuine or all impostor, and a failed write (disk
full: the original file stays as it was).

Examples:
    python tools/calibrate.py configs/synthface/oaml_ir18_synthface.py \\
        work_dirs/oaml_ir18_synthface/iter_500.pth --out calibrated.pth
    python tools/calibrate.py configs/oaml_ir50.py epoch_26.pth \\
        --cfg-options default_hooks.threshold_calibration.far=1e-4
"""
import argparse
import importlib.util
import os.path as osp
import runpy

if __name__ == '__main__':
    # glibc reads its malloc thresholds at start-up only (tools/test.py).
    # Found without importing oaml_mm, so it also works from an installed
    # package's oaml_mm/.mim/tools/ (mim train, docs/get_started.md).
    _spec = importlib.util.find_spec('oaml_mm')
    if _spec is not None and _spec.submodule_search_locations:
        _tuning = osp.join(list(_spec.submodule_search_locations)[0], 'utils',
                           'malloc_tuning.py')
        runpy.run_path(_tuning)['reexec_with_malloc_env']()

from oaml_mm.utils import CfgOptionsAction


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config', help='config whose val_dataloader holds the '
                   'calibration pairs')
    p.add_argument('checkpoint', help='trained checkpoint')
    p.add_argument('--out', help='checkpoint to write (default: rewrite '
                   'CHECKPOINT in place)')
    p.add_argument('--work-dir', help='folder for the logs')
    p.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                   help='override settings in the config, key=value')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import oaml_mm  # noqa: F401  (registers the components)
    from oaml_mm.apis.calibrate import (calibrate_checkpoint,
                                        check_calibration_inputs,
                                        format_calibration)
    from oaml_mm.apis.runner_setup import exit_on_error, prepare_config
    from oaml_mm.utils import close_process_group
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'{args.checkpoint}: no such checkpoint file')
    out = args.out or args.checkpoint
    with exit_on_error():
        # Before the validation pass, whose result a late error loses: where
        # the result goes, and that the checkpoint is one.
        check_calibration_inputs(args.checkpoint, out)
        cfg = prepare_config(args.config, args.cfg_options, args.work_dir)
        if cfg.get('val_dataloader') is None:
            raise SystemExit(f'{args.config}: no val_dataloader: nothing to '
                             'calibrate on')
        cal = calibrate_checkpoint(cfg, args.checkpoint, out, args.config)
    if cal is None:
        raise SystemExit(
            'nothing calibrated: the config needs a ThresholdCalibrationHook '
            '(default_hooks.threshold_calibration) and a VerificationMetric '
            'over genuine and impostor pairs in val_evaluator')
    print(format_calibration(cal, out))
    close_process_group()


if __name__ == '__main__':
    main()
