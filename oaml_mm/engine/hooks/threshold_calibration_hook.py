"""Same/different thresholds calibrated at a chosen FAR, stored in the checkpoint.

A verification score is only useful to a deployment with a threshold, and the
threshold only means something at a stated false accept rate on data like the
deployment's. This hook reads the pair scores the face metrics computed in the last
validation pass (``VerificationMetric.scores`` / ``.labels``: the ``adaface`` cosine,
the ``qaconv`` score and, through the evaluation layer's impostor z-norm fusion, the
``fused`` score), picks per branch the lowest threshold whose FAR on the impostor
pairs does not exceed the target (the "strict" reading of a ROC, see
:mod:`oaml_mm.evaluation.functional.roc`), and stores the result under
``checkpoint['meta']['oaml_thresholds']``. The fused branch also needs the impostor
statistics used to standardise the two branches, so they are stored with it;
:class:`oaml_mm.apis.FaceRecognizer` reads all of it back.

Validation runs after the epoch's checkpoint is written, so the last checkpoint is
re-written (atomically) with the final calibration when training ends.
"""
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log

from oaml_mm.errors import ConfigError
from oaml_mm.evaluation.functional import (BRANCHES, THRESHOLDS_META_KEY,
                                           calibrate_thresholds)
from oaml_mm.registry import HOOKS
from oaml_mm.utils.checkpoint import atomic_save, safe_load_checkpoint

__all__ = ['ThresholdCalibrationHook', 'META_KEY']

#: Key of the calibration in ``checkpoint['meta']`` and the message hub (defined
#: with the calibration itself in ``oaml_mm.evaluation.functional.thresholds``).
META_KEY = THRESHOLDS_META_KEY


@HOOKS.register_module()
class ThresholdCalibrationHook(Hook):
    """Calibrate same/different thresholds on the validation pairs.

    Needs ``VerificationMetric`` in the validation evaluator(s) (its pair scores are
    read after each validation pass). The result goes to the message hub
    (``oaml_thresholds``) and into every checkpoint's ``meta['oaml_thresholds']``;
    when training ends the last checkpoint is re-written with the final calibration.

    Every config built on ``configs/_base_/default_runtime.py`` has one, at
    FAR 1e-3 over every validation ``VerificationMetric``/``IJBMetric``, as
    ``default_hooks.threshold_calibration``: training with a validation set
    gives checkpoints that decide same/different. Without validation it does
    nothing. Change it there (or set it to None); one also listed in
    ``custom_hooks`` takes over and the default stays idle.

    Example::

        default_hooks = dict(threshold_calibration=dict(
            type='ThresholdCalibrationHook', far=1e-2, datasets=['clean']))

    Args:
        far (float): Target false accept rate. Defaults to 1e-3.
        datasets (Sequence[str], optional): ``dataset_name`` of the metrics whose
            pairs are pooled; None: every ``VerificationMetric``.
        decision_branch (str): ``'fused'`` (default), ``'adaface'`` or ``'qaconv'``.
    """

    priority = 'LOW'

    def __init__(self,
                 far: float = 1e-3,
                 datasets: Optional[Sequence[str]] = None,
                 decision_branch: str = 'fused') -> None:
        if not 0 < far < 1:
            raise ConfigError(f'ThresholdCalibrationHook: far must be in (0, 1), '
                              f'got {far}')
        if decision_branch not in BRANCHES:
            raise ConfigError(
                f'ThresholdCalibrationHook: decision_branch must be one of '
                f'{BRANCHES}, got {decision_branch!r}')
        self.far = float(far)
        self.datasets = None if datasets is None else list(datasets)
        self.decision_branch = decision_branch
        self.calibration: Optional[dict] = None
        self._active = True

    def before_run(self, runner) -> None:
        # configs/_base_/default_runtime.py registers one under default_hooks;
        # a config that also lists one in custom_hooks (registered later)
        # means that one: two would calibrate twice and race on the checkpoint.
        mine = [h for h in runner.hooks if isinstance(h, ThresholdCalibrationHook)]
        self._active = mine[-1] is self
        if not self._active:
            print_log('ThresholdCalibrationHook: another one is configured '
                      f'(far={mine[-1].far:g}); this one (far={self.far:g}) '
                      'stays idle', logger='current')

    def _metrics(self, runner) -> List:
        loop = runner.val_loop
        evaluators = getattr(loop, 'evaluators', None) or [loop.evaluator]
        found = []
        for ev in evaluators:
            for m in ev.metrics:
                if getattr(m, 'scores', None) is None or \
                        getattr(m, 'labels', None) is None:
                    continue
                if self.datasets is None or m.dataset_name in self.datasets:
                    found.append(m)
        return found

    def after_val_epoch(self, runner, metrics=None) -> None:
        if not self._active:
            return
        found = self._metrics(runner)
        if not found:
            print_log('ThresholdCalibrationHook: no VerificationMetric scores '
                      'in the validation evaluators; nothing calibrated',
                      logger='current', level=30)
            return
        branches = set.intersection(*(set(m.scores) for m in found))
        scores = {b: np.concatenate([np.asarray(m.scores[b]) for m in found])
                  for b in ('adaface', 'qaconv') if b in branches}
        labels = np.concatenate([np.asarray(m.labels) for m in found])
        # The metrics set the scores of a branch fed non-finite features to
        # NaN: a threshold from them would be made up.
        broken = sorted(b for b, v in scores.items() if not np.isfinite(v).all())
        if broken:
            print_log(f'ThresholdCalibrationHook: non-finite {broken} scores; '
                      'no threshold for ' + (
                          'any branch' if 'adaface' in broken else
                          'these branches nor fused'),
                      logger='current', level=30)
            scores = {b: v for b, v in scores.items() if b not in broken}
        if 'adaface' not in scores or labels.all() or not labels.any():
            return
        cal = calibrate_thresholds(
            scores, labels, self.far, found[0].fuse_weights,
            self.decision_branch, '+'.join(m.dataset_name for m in found))
        cal['iter'] = int(runner.iter)
        cal['epoch'] = int(runner.epoch)
        self.calibration = cal
        runner.message_hub.update_info(META_KEY, cal)
        summary = ', '.join(f'{b} {v["threshold"]:.4g} (TAR {100 * v["tar"]:.1f}%)'
                            for b, v in cal['branches'].items())
        print_log(f'thresholds at FAR={self.far:g} on {cal["source"]}: {summary}',
                  logger='current')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.calibration is not None and self._active:
            checkpoint.setdefault('meta', {})[META_KEY] = dict(self.calibration)

    def after_train(self, runner) -> None:
        if self.calibration is None or not self._active or \
                not is_main_process():
            return
        marker = osp.join(runner.work_dir, 'last_checkpoint')
        if not osp.isfile(marker):
            return
        with open(marker) as f:
            path = f.read().strip()
        if not osp.isfile(path):
            return
        ckpt = safe_load_checkpoint(path, decode=False)
        meta = ckpt.setdefault('meta', {})
        if meta.get(META_KEY) == self.calibration:
            return
        meta[META_KEY] = dict(self.calibration)
        atomic_save(ckpt, path)
