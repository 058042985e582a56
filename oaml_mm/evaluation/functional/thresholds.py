"""Same/different thresholds at a target false accept rate, and what is stored.

The protocol side of threshold calibration (used by
:class:`~oaml_mm.engine.hooks.ThresholdCalibrationHook` during training and read
back by :class:`~oaml_mm.apis.FaceRecognizer`): per-branch thresholds on a set of
scored pairs, the impostor statistics of the fused score, the visibility-aware
fusion fitted on the same pairs, and the names under which they are stored. See
docs/inference.md, "Thresholds".
"""
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from oaml_mm.errors import ConfigError
from .fusion import (apply_visibility_fusion, fit_visibility_fusion,
                     fuse_scores, impostor_stats)
from .roc import roc_curve

__all__ = ['BRANCHES', 'THRESHOLDS_META_KEY', 'FUSED_VIS', 'VIS_FUSION_KEY',
           'DECISION_BRANCHES', 'threshold_at_far', 'calibrate_thresholds']

#: The score branches of a face model: the AdaFace cosine, the QAConv score and
#: their fused sum (metric keys ``{dataset}/{branch}/{metric}``).
BRANCHES = ('adaface', 'qaconv', 'fused')
#: Key of the calibration in ``checkpoint['meta']`` and the message hub.
THRESHOLDS_META_KEY = 'oaml_thresholds'
#: The visibility-aware fused score (:func:`~.fusion.apply_visibility_fusion`):
#: reported as ``{dataset}/fused_vis/{metric}`` when its parameters are known.
FUSED_VIS = 'fused_vis'
#: Key of the fitted visibility fusion inside the calibration dict
#: (``checkpoint['meta']['oaml_thresholds']['vis_fusion']``).
VIS_FUSION_KEY = 'vis_fusion'
#: Branches that can decide same/different: the three metric branches and the
#: visibility-aware fusion.
DECISION_BRANCHES = BRANCHES + (FUSED_VIS, )


def threshold_at_far(scores: np.ndarray, labels: np.ndarray,
                     far: float) -> Tuple[float, float, float]:
    """Lowest threshold whose false accept rate is at most ``far``.

    A pair is accepted when ``score >= threshold``. When even the highest impostor
    score exceeds the target (too few impostors for ``far``), the threshold sits just
    above the highest impostor score (FAR 0).

    Args:
        scores (np.ndarray): ``[N]`` similarity per pair.
        labels (np.ndarray): ``[N]`` bool, True for genuine pairs.
        far (float): Target false accept rate in (0, 1).

    Returns:
        tuple: ``(threshold, tar, far_reached)`` on these pairs.

    Examples:
        >>> threshold_at_far([0.9, 0.8, 0.7, 0.2, 0.1], [1, 1, 0, 1, 0], 0.5)
        (0.2, 1.0, 0.5)
    """
    if not 0 < far < 1:
        raise ConfigError(f'far must be in (0, 1), got {far}')
    fpr, tpr, thr = roc_curve(scores, labels, drop_intermediate=False)
    # fpr is non-decreasing; the last point with fpr <= far has the largest TAR.
    idx = int(np.searchsorted(fpr, far, side='right')) - 1
    if idx <= 0:
        neg = np.asarray(scores, np.float64)[~np.asarray(labels).astype(bool)]
        top = float(neg.max())
        return float(np.nextafter(top, np.inf)), float(tpr[0]), 0.0
    return float(thr[idx]), float(tpr[idx]), float(fpr[idx])


def calibrate_thresholds(scores: Dict[str, np.ndarray],
                         labels: np.ndarray,
                         far: float,
                         fuse_weights: Sequence[float] = (0.5, 0.5),
                         decision_branch: str = 'fused',
                         source: str = '',
                         visibility: Optional[Tuple[np.ndarray,
                                                    np.ndarray]] = None,
                         fusion_C: float = 1.0,
                         vis_range: Optional[Sequence[float]] = None) -> dict:
    """Per-branch thresholds at ``far`` and the fusion statistics, as stored in meta.

    With ``visibility`` (and both branches) the visibility-aware fusion is
    fitted on these pairs (:func:`~.fusion.fit_visibility_fusion`), stored under
    ``vis_fusion`` and its logit thresholded like a branch (``fused_vis``); a
    ``'fused'`` decision then becomes ``'fused_vis'``, the fusion of the same
    two scores that also weighs how visible the faces are.

    Args:
        scores (dict): ``adaface`` and optionally ``qaconv`` ``[N]`` pair scores.
        labels (np.ndarray): ``[N]`` genuine flags.
        far (float): Target FAR.
        fuse_weights (Sequence[float]): (adaface, qaconv) fusion weights.
        decision_branch (str): Branch whose threshold decides same/different
            (a missing one falls back to ``fused``, then ``adaface``).
        source (str): Where the pairs came from (kept for the record).
        visibility (tuple, optional): ``([N], [N])`` mean visibility of the
            first and second face of each pair, of the map calibrated by
            ``vis_range``.
        fusion_C (float): Inverse regularisation of the visibility fusion.
        vis_range (Sequence[float], optional): The calibration of that map
            (the model's ``test_cfg.vis_range``; None: the raw map), recorded
            in the fusion's parameters.

    Returns:
        dict: ``far``, ``source``, ``num_pairs``, ``decision_branch``,
        ``fuse_weights``, ``fuse_stats`` ({branch: [mean, std]}), ``branches``
        ({branch: {threshold, tar, far}}) and, when fitted, ``vis_fusion``.
    """
    labels = np.asarray(labels).astype(bool).reshape(-1)
    scores = {k: np.asarray(v, np.float64).reshape(-1) for k, v in scores.items()}
    out = dict(far=float(far), source=source, num_pairs=int(labels.size),
               fuse_weights=[float(w) for w in fuse_weights], fuse_stats={},
               branches={})
    if 'adaface' in scores and 'qaconv' in scores:
        stats = [impostor_stats(scores['adaface'], labels),
                 impostor_stats(scores['qaconv'], labels)]
        scores['fused'] = fuse_scores([scores['adaface'], scores['qaconv']],
                                      fuse_weights, stats)
        out['fuse_stats'] = {'adaface': list(stats[0]), 'qaconv': list(stats[1])}
        if visibility is not None:
            va, vb = visibility
            params = fit_visibility_fusion(scores['adaface'], scores['qaconv'],
                                           va, vb, labels, fusion_C, source,
                                           vis_range)
            out[VIS_FUSION_KEY] = params
            scores[FUSED_VIS] = apply_visibility_fusion(
                params, scores['adaface'], scores['qaconv'], va, vb)
    for branch, s in scores.items():
        t, tar, reached = threshold_at_far(s, labels, far)
        out['branches'][branch] = dict(threshold=t, tar=tar, far=reached)
    if decision_branch == 'fused' and FUSED_VIS in out['branches']:
        decision_branch = FUSED_VIS
    for b in (decision_branch, 'fused', 'adaface'):
        # A missing branch falls back to the next best one that was scored.
        if b in out['branches']:
            out['decision_branch'] = b
            break
    return out
