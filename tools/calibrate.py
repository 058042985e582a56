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
import pickle
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

from mmengine.config import DictAction
from mmengine.runner import Runner


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config', help='config whose val_dataloader holds the '
                   'calibration pairs')
    p.add_argument('checkpoint', help='trained checkpoint')
    p.add_argument('--out', help='checkpoint to write (default: rewrite '
                   'CHECKPOINT in place)')
    p.add_argument('--work-dir', help='folder for the logs')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override settings in the config, key=value')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import oaml_mm  # noqa: F401  (registers the components)
    from oaml_mm.engine.hooks import ThresholdCalibrationHook
    from oaml_mm.engine.hooks.threshold_calibration_hook import (
        META_KEY, check_calibration_pairs, val_files)
    from oaml_mm.errors import DataFormatError, OAMLError
    from oaml_mm.registry import RUNNERS
    from oaml_mm.utils import check_output_file, load_config, merge_cfg_options
    from oaml_mm.utils.checkpoint import (atomic_save, check_checkpoint_fits,
                                          safe_load_checkpoint)
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'{args.checkpoint}: no such checkpoint file')
    out = args.out or args.checkpoint
    try:
        # Checked before the validation pass, whose result a late error loses:
        # where the result goes, and that the checkpoint is one.
        check_output_file(out, '--out')
        safe_load_checkpoint(args.checkpoint, decode=False)
    except OAMLError as e:
        raise SystemExit(f'{type(e).__name__}: {e}')
    try:
        cfg = load_config(args.config)
        if args.cfg_options is not None:
            merge_cfg_options(cfg, args.cfg_options)
        if cfg.get('val_dataloader') is None:
            raise SystemExit(f'{args.config}: no val_dataloader: nothing to '
                             'calibrate on')
        cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
            './work_dirs', osp.splitext(osp.basename(args.config))[0])
        cfg.load_from = args.checkpoint
        cfg.resume = False
        runner = (RUNNERS.build(cfg) if 'runner_type' in cfg else
                  Runner.from_cfg(cfg))
        # mmengine's load_from loads what matches; thresholds of a partly
        # loaded model would be those of random weights.
        check_checkpoint_fits(args.checkpoint,
                              safe_load_checkpoint(args.checkpoint,
                                                   decode=False),
                              getattr(runner.model, 'module', runner.model))
        # One-sided pairs: one line naming the file, not the ROC's traceback.
        check_calibration_pairs(runner.val_dataloader.dataset)
        runner.val()
        hooks = [h for h in runner.hooks
                 if isinstance(h, ThresholdCalibrationHook) and h._active]
        cal = hooks[0].calibration if hooks else None
        if cal is None and hooks and hooks[0].skipped:
            files = val_files(runner.val_dataloader.dataset)
            raise DataFormatError(', '.join(files) or args.config,
                                  f'{hooks[0].skipped}; nothing was written')
        if cal is None:
            raise SystemExit(
                'nothing calibrated: the config needs a ThresholdCalibrationHook '
                '(default_hooks.threshold_calibration) and a VerificationMetric '
                'over genuine and impostor pairs in val_evaluator')
        ckpt = safe_load_checkpoint(args.checkpoint, decode=False)
        meta = ckpt.setdefault('meta', {})
        cal = dict(cal)
        # Runner.val() loads the weights without the training state: its
        # iteration counter is 0, not the trained model's.
        for key in ('iter', 'epoch'):
            if isinstance(meta.get(key), int):
                cal[key] = meta[key]
        meta[META_KEY] = cal
        out = args.out or args.checkpoint
        atomic_save(ckpt, out)
    except OAMLError as e:
        raise SystemExit(f'{type(e).__name__}: {e}')
    except pickle.UnpicklingError as e:
        raise SystemExit('refused to load a checkpoint that holds objects '
                         'other than weights (it could run code): '
                         f'{str(e).splitlines()[0]}')
    summary = ', '.join(f'{b} {v["threshold"]:.4g}'
                        for b, v in cal['branches'].items())
    print(f'calibrated on {cal["source"]} at FAR={cal["far"]:g} '
          f'(decision: {cal.get("decision_branch")}): {summary}; written to '
          f'{out}')
    from oaml_mm.utils import close_process_group
    close_process_group()


if __name__ == '__main__':
    main()
