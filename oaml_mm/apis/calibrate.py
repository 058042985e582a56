"""Recalibrate a trained checkpoint's decision without training: ``tools/calibrate.py``.

:func:`calibrate_checkpoint` runs the config's validation pairs through the
checkpoint's model; its ``ThresholdCalibrationHook`` picks every branch's threshold
at its FAR and, for a model with an occlusion head, fits the visibility-aware fusion
(docs/evaluation.md, "Visibility-aware fusion"). The result replaces
``meta['oaml_thresholds']`` of the written checkpoint; the weights are copied
unchanged. Nothing is written when a check fails.
"""
from typing import Optional

from mmengine.config import Config

from oaml_mm.engine.hooks import ThresholdCalibrationHook
from oaml_mm.engine.hooks.threshold_calibration_hook import (
    META_KEY, check_calibration_pairs, val_files)
from oaml_mm.errors import DataFormatError
from oaml_mm.utils import check_output_file
from oaml_mm.utils.checkpoint import (atomic_save, check_checkpoint_file,
                                      safe_load_checkpoint)
from .runner_setup import build_runner, check_loaded_checkpoint

__all__ = ['check_calibration_inputs', 'calibrate_checkpoint',
           'format_calibration', 'TRAINING_KEYS']

#: The config's training setup, unused by calibration.
TRAINING_KEYS = ('train_dataloader', 'train_cfg', 'optim_wrapper',
                 'param_scheduler')


def check_calibration_inputs(checkpoint: str, out: str) -> None:
    """Refuse, before the validation pass, what would lose its result.

    Args:
        checkpoint (str): The trained checkpoint.
        out (str): Where the recalibrated checkpoint goes (``--out``).

    Raises:
        OutputPathError: ``out`` cannot be written.
        CheckpointError: ``checkpoint`` is not a checkpoint or fails its CRC
            check.
        pickle.UnpicklingError: It holds objects other than weights.
    """
    check_output_file(out, '--out')
    # CRC-32 and a weights-only unpickling with the tensors memory-mapped:
    # the file is read, not loaded (the runner loads it next).
    check_checkpoint_file(checkpoint, unpickle=True)


def calibrate_checkpoint(cfg: Config, checkpoint: str,
                         out: Optional[str] = None,
                         config_name: Optional[str] = None) -> Optional[dict]:
    """Calibrate ``checkpoint`` on ``cfg``'s validation pairs, write it to ``out``.

    Only the validation data is read: the training set need not exist (the
    config's :data:`TRAINING_KEYS` are set to None here).

    Args:
        cfg (Config): A config with ``val_dataloader`` (the calibration pairs),
            ``val_evaluator`` and ``work_dir``; its ``load_from`` and ``resume``
            are set here.
        checkpoint (str): The trained checkpoint.
        out (str, optional): The checkpoint to write. Defaults to
            ``checkpoint`` itself, as ``tools/calibrate.py`` without ``--out``:
            rewritten atomically (a symbolic link's target is rewritten).
        config_name (str, optional): Names the config in messages when the
            validation data names no file. Defaults to ``cfg.filename``.

    Returns:
        dict or None: The calibration written (``source``, ``far``,
        ``decision_branch``, ``branches`` -> ``threshold`` ..., and the
        checkpoint's ``iter`` / ``epoch``); None, with nothing written, when
        the config has no active ``ThresholdCalibrationHook`` and
        ``VerificationMetric`` to calibrate with.

    Raises:
        CheckpointError: The checkpoint loads only partly into the model.
        DataFormatError: The pairs are all genuine or all impostor, or the hook
            skipped calibrating (the message names the files and why).
        pickle.UnpicklingError: It holds objects other than weights.
    """
    out = checkpoint if out is None else out
    cfg.load_from = checkpoint
    cfg.resume = False
    # ``runner.iter`` (asked by the calibration hook and MMPretrain's
    # VisualizationHook) builds the training loop, hence the training set:
    # without a training setup the runner answers 0 and reads no training data.
    for key in TRAINING_KEYS:
        cfg[key] = None
    runner = build_runner(cfg)
    # Thresholds of a partly loaded model would be those of random weights.
    check_loaded_checkpoint(runner, checkpoint)
    # One-sided pairs: one line naming the file, not the ROC's traceback.
    check_calibration_pairs(runner.val_dataloader.dataset)
    runner.val()
    hooks = [h for h in runner.hooks
             if isinstance(h, ThresholdCalibrationHook) and h._active]
    cal = hooks[0].calibration if hooks else None
    if cal is None and hooks and hooks[0].skipped:
        files = val_files(runner.val_dataloader.dataset)
        raise DataFormatError(
            ', '.join(files) or config_name or cfg.filename,
            f'{hooks[0].skipped}; nothing was written')
    if cal is None:
        return None
    ckpt = safe_load_checkpoint(checkpoint, decode=False)
    meta = ckpt.setdefault('meta', {})
    cal = dict(cal)
    # Runner.val() loads the weights without the training state: its
    # iteration counter is 0, not the trained model's.
    for key in ('iter', 'epoch'):
        if isinstance(meta.get(key), int):
            cal[key] = meta[key]
    meta[META_KEY] = cal
    atomic_save(ckpt, out)
    return cal


def format_calibration(cal: dict, out: str) -> str:
    """One line: the split, the FAR, the deciding branch and every threshold.

    Args:
        cal (dict): A calibration (:func:`calibrate_checkpoint`).
        out (str): The checkpoint it was written to.

    Returns:
        str: ``'calibrated on <source> at FAR=<far> (decision: <branch>):
        <branch> <threshold>, ...; written to <out>'``.
    """
    summary = ', '.join(f'{b} {v["threshold"]:.4g}'
                        for b, v in cal['branches'].items())
    return (f'calibrated on {cal["source"]} at FAR={cal["far"]:g} '
            f'(decision: {cal.get("decision_branch")}): {summary}; written to '
            f'{out}')
