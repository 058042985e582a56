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
statistics used to standardise the two branches, so they are stored with it.
When the metrics also kept each pair's mean visibility
(``VerificationMetric.pair_visibility``: of the map the model's matcher reads, the
prediction calibrated by ``test_cfg.vis_range``, which the fitted parameters
record), the visibility-aware fusion is fitted on the same pairs
(:func:`~oaml_mm.evaluation.functional.fit_visibility_fusion`) and stored with
its own threshold (``vis_fusion``, ``branches['fused_vis']``);
:class:`oaml_mm.apis.FaceRecognizer` reads all of it back, and ``tools/test.py``
hands the fusion to the test metrics (:meth:`ThresholdCalibrationHook.before_test`).

Validation runs after the epoch's checkpoint is written, so the last checkpoint is
re-written (atomically) with the final calibration when training ends.
"""
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from oaml_mm.errors import CheckpointError, ConfigError, DataFormatError
from oaml_mm.evaluation.functional import (DECISION_BRANCHES,
                                           THRESHOLDS_META_KEY, VIS_FUSION_KEY,
                                           calibrate_thresholds,
                                           check_visibility_fusion)
from oaml_mm.models.utils import (calibration_settings_problem,
                                  embedding_settings)
from oaml_mm.registry import HOOKS
from oaml_mm.utils.checkpoint import (atomic_save, resolve_last_checkpoint,
                                      safe_load_checkpoint)

__all__ = ['ThresholdCalibrationHook', 'META_KEY', 'val_files',
           'check_calibration_pairs']

#: Key of the calibration in ``checkpoint['meta']`` and the message hub (defined
#: with the calibration itself in ``oaml_mm.evaluation.functional.thresholds``).
META_KEY = THRESHOLDS_META_KEY


def val_files(dataset) -> List[str]:
    """The annotation files of a (concatenated) validation dataset, for messages."""
    if hasattr(dataset, 'datasets'):
        return [f for d in dataset.datasets for f in val_files(d)]
    ann = getattr(dataset, 'ann_file', None)
    return [str(ann)] if ann else []


def check_calibration_pairs(dataset) -> None:
    """Refuse validation pairs that are all genuine or all impostor.

    A threshold at a FAR needs impostor scores, a TAR genuine ones; with one
    kind only the ROC is undefined. Checked per pair dataset (each is
    evaluated on its own) before any image is embedded.

    Args:
        dataset: The validation dataset (a ``ConcatDataset`` of pair datasets
            is searched; datasets without ``issame`` are skipped).

    Raises:
        DataFormatError: Names the file, the kind and the number of pairs.
    """
    if hasattr(dataset, 'datasets'):
        for d in dataset.datasets:
            check_calibration_pairs(d)
        return
    if not hasattr(type(dataset), 'issame'):
        return
    issame = np.asarray(dataset.issame, bool)
    if issame.size and (issame.all() or not issame.any()):
        raise DataFormatError(
            getattr(dataset, 'ann_file', type(dataset).__name__),
            'the calibration pairs are '
            f'all {"genuine" if issame.all() else "impostor"} ({issame.size} '
            'pairs): a threshold needs both genuine and impostor pairs; '
            'nothing was written')


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
        decision_branch (str): ``'fused'`` (default: the visibility-aware
            ``'fused_vis'`` when it was fitted, else the z-sum), ``'fused_vis'``,
            ``'adaface'`` or ``'qaconv'``.
        vis_fusion (bool): Fit the visibility-aware fusion when the metrics kept
            the pairs' visibility. Defaults to True.
        fusion_C (float): Its inverse L2 regularisation. Defaults to 1.0.

    The validation pairs are the calibration split: they must not be the test
    pairs (SynthFace: ``val/calib.bin``, docs/evaluation.md).

    At test time (``tools/test.py``) the hook reads the loaded checkpoint's
    visibility fusion and gives it to every test metric with
    ``set_fusion_params`` that has none of its own, so they report
    ``{dataset}/fused_vis/...``.
    """

    priority = 'LOW'

    def __init__(self,
                 far: float = 1e-3,
                 datasets: Optional[Sequence[str]] = None,
                 decision_branch: str = 'fused',
                 vis_fusion: bool = True,
                 fusion_C: float = 1.0) -> None:
        if not 0 < far < 1:
            raise ConfigError(f'ThresholdCalibrationHook: far must be in (0, 1), '
                              f'got {far}')
        if decision_branch not in DECISION_BRANCHES:
            raise ConfigError(
                f'ThresholdCalibrationHook: decision_branch must be one of '
                f'{DECISION_BRANCHES}, got {decision_branch!r}')
        if not 0 < fusion_C < float('inf'):
            raise ConfigError('ThresholdCalibrationHook: fusion_C must be '
                              f'positive, got {fusion_C}')
        self.far = float(far)
        self.datasets = None if datasets is None else list(datasets)
        self.decision_branch = decision_branch
        self.vis_fusion = bool(vis_fusion)
        self.fusion_C = float(fusion_C)
        self.calibration: Optional[dict] = None
        #: Why the last validation calibrated nothing (one-sided pairs), or None.
        self.skipped: Optional[str] = None
        #: The visibility fusion of the checkpoint loaded for testing.
        self.loaded_fusion: Optional[dict] = None
        #: Why the loaded checkpoint's visibility fusion is not applied.
        self.loaded_fusion_problem: Optional[str] = None
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
        source = '+'.join(m.dataset_name for m in found)
        if labels.size and (labels.all() or not labels.any()):
            self.skipped = (
                f'the validation pairs of {source} are all '
                f'{"genuine" if labels.all() else "impostor"} ({labels.size} '
                'pairs): a threshold needs both genuine and impostor pairs')
            print_log(f'ThresholdCalibrationHook: {self.skipped}; nothing '
                      'calibrated', logger='current', level=30)
            return
        if 'adaface' not in scores or not labels.size:
            return
        vis = [getattr(m, 'pair_visibility', None) for m in found]
        # The map the metrics' pair visibility is the mean of (the model's
        # calibration): recorded in the fusion's parameters.
        ranges = {tuple(getattr(m, 'pair_visibility_range', None) or ())
                  for m in found}
        visibility = None
        if self.vis_fusion and 'qaconv' in scores and all(
                v is not None for v in vis) and len(ranges) == 1:
            v = np.concatenate([np.asarray(x, np.float64) for x in vis])
            if v.shape == (labels.size, 2) and np.isfinite(v).all():
                visibility = (v[:, 0], v[:, 1])
        elif self.vis_fusion and 'qaconv' in scores:
            print_log('ThresholdCalibrationHook: the metrics kept no pair '
                      'visibility (no occlusion head?); no visibility fusion',
                      logger='current')
        try:
            cal = calibrate_thresholds(
                scores, labels, self.far, found[0].fuse_weights,
                self.decision_branch, source, visibility, self.fusion_C,
                next(iter(ranges)) or None)
        except ConfigError as e:
            print_log(f'ThresholdCalibrationHook: visibility fusion not '
                      f'fitted ({e})', logger='current', level=30)
            cal = calibrate_thresholds(
                scores, labels, self.far, found[0].fuse_weights,
                self.decision_branch, source)
        # What the thresholds hold for: scores made under other preprocessing
        # are on another scale (FaceRecognizer then does not use them).
        model = getattr(runner, 'model', None)
        if model is not None:
            cal['settings'] = embedding_settings(
                model.module if is_model_wrapper(model) else model)
        cal['iter'] = int(runner.iter)
        cal['epoch'] = int(runner.epoch)
        self.calibration = cal
        runner.message_hub.update_info(META_KEY, cal)
        summary = ', '.join(f'{b} {v["threshold"]:.4g} (TAR {100 * v["tar"]:.1f}%)'
                            for b, v in cal['branches'].items())
        print_log(f'thresholds at FAR={self.far:g} on {cal["source"]}: {summary}',
                  logger='current')

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep the loaded checkpoint's visibility fusion for the test metrics."""
        meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
        cal = meta.get(META_KEY) if isinstance(meta, dict) else None
        params = cal.get(VIS_FUSION_KEY) if isinstance(cal, dict) else None
        self.loaded_fusion_problem = None
        if params is None:
            self.loaded_fusion = None
            return
        where = f"checkpoint {getattr(runner, '_load_from', None) or ''}".strip()
        try:
            check_visibility_fusion(
                params, f"{where} meta['{META_KEY}']['{VIS_FUSION_KEY}']")
        except ConfigError as e:
            raise CheckpointError(str(e)) from e
        # Fitted on scores made under other settings (another vis_range):
        # not applied, as FaceRecognizer drops such a calibration.
        model = getattr(runner, 'model', None)
        problem = None if model is None else calibration_settings_problem(
            cal, embedding_settings(
                model.module if is_model_wrapper(model) else model), where)
        if problem:
            print_log(f'ThresholdCalibrationHook: {problem}', logger='current',
                      level=30)
            self.loaded_fusion, self.loaded_fusion_problem = None, problem
            return
        thr = (cal.get('branches') or {}).get('fused_vis') or {}
        self.loaded_fusion = dict(params=params,
                                  threshold=thr.get('threshold'),
                                  far=cal.get('far'))

    def before_test(self, runner) -> None:
        """Give the loaded visibility fusion to the test metrics that take it."""
        if not self._active:
            return
        evaluator = getattr(runner.test_loop, 'evaluator', None)
        metrics = [m for m in getattr(evaluator, 'metrics', ())
                   if callable(getattr(m, 'set_fusion_params', None))]
        if not metrics:
            return
        if self.loaded_fusion is None:
            why = ('its visibility fusion does not hold for this config'
                   if self.loaded_fusion_problem else
                   'the checkpoint holds no visibility fusion')
            print_log(f'ThresholdCalibrationHook: {why}; no fused_vis keys',
                      logger='current')
            return
        params = self.loaded_fusion['params']
        fitted_on = set(str(params.get('source', '')).split('+')) - {''}
        for m in metrics:
            m.set_fusion_params(params, from_checkpoint=True)
            if getattr(m, 'fusion_params', None) == params and \
                    getattr(m, 'dataset_name', None) in fitted_on:
                # Only the names are known here, not the files.
                print_log(f'{m.dataset_name}: the visibility fusion was '
                          f'fitted on a validation set of this name '
                          f'({params["source"]}); its fused_vis figures are '
                          'held-out only if those pairs are not these',
                          logger='current', level=30)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.calibration is not None and self._active:
            checkpoint.setdefault('meta', {})[META_KEY] = dict(self.calibration)

    def after_train(self, runner) -> None:
        if self.calibration is None or not self._active or \
                not is_main_process():
            return
        # The run's own file of that name (a copied work dir: never another's).
        path, _ = resolve_last_checkpoint(runner.work_dir)
        if path is None or not osp.isfile(path):
            return
        ckpt = safe_load_checkpoint(path, decode=False)
        meta = ckpt.setdefault('meta', {})
        if meta.get(META_KEY) == self.calibration:
            return
        meta[META_KEY] = dict(self.calibration)
        atomic_save(ckpt, path)
