"""ROC analysis of verification scores: ROC curve, TAR@FAR, AUC, EER.

TAR@FAR follows the rule behind the published IJB-B/IJB-C tables (insightface's
``IJB_11.py``, reused by AdaFace): compute the ROC with scikit-learn's
``roc_curve`` (collinear points dropped), then for each target FAR take the ROC point
whose FPR is closest to it, ties going to the larger FPR. ``rule='strict'`` gives the
conservative reading instead: the largest TAR reachable with FAR <= target.
"""
from typing import Dict, Sequence, Tuple

import numpy as np

__all__ = ['roc_curve', 'tar_at_far', 'auc', 'eer', 'DEFAULT_FARS']

DEFAULT_FARS: Tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def _check(scores: np.ndarray, labels: np.ndarray):
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).astype(bool).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f'{scores.size} scores but {labels.size} labels')
    if labels.all() or not labels.any():
        raise ValueError('ROC needs both genuine and impostor pairs')
    return scores, labels


def roc_curve(scores: np.ndarray,
              labels: np.ndarray,
              drop_intermediate: bool = True
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of a similarity score, identical to ``sklearn.metrics.roc_curve``.

    Args:
        scores (np.ndarray): ``[N]`` similarity (higher = more likely genuine).
        labels (np.ndarray): ``[N]`` bool, True for genuine pairs.
        drop_intermediate (bool): Drop points on straight ROC segments, as
            scikit-learn does by default (and as the published IJB tables used).

    Returns:
        tuple: ``fpr``, ``tpr`` (increasing, starting at 0) and ``thresholds``
        (decreasing, the first one ``inf``): the point ``i`` accepts pairs with
        ``score >= thresholds[i]``.

    Examples:
        >>> fpr, tpr, _ = roc_curve([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        >>> fpr.tolist(), tpr.tolist()
        ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    scores, labels = _check(scores, labels)
    order = np.argsort(scores, kind='mergesort')[::-1]
    s = scores[order]
    y = labels[order]
    distinct = np.where(np.diff(s))[0]
    ends = np.r_[distinct, y.size - 1]
    tps = np.cumsum(y)[ends].astype(np.float64)
    fps = (1 + ends - tps).astype(np.float64)
    thresholds = s[ends]
    if drop_intermediate and len(fps) > 2:
        keep = np.where(
            np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)),
                  True])[0]
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    tps = np.r_[0, tps]
    fps = np.r_[0, fps]
    thresholds = np.r_[np.inf, thresholds]
    return fps / fps[-1], tps / tps[-1], thresholds


def tar_at_far(scores: np.ndarray,
               labels: np.ndarray,
               fars: Sequence[float] = DEFAULT_FARS,
               rule: str = 'closest') -> Dict[float, float]:
    """True accept rate at given false accept rates.

    Args:
        scores (np.ndarray): ``[N]`` similarity per pair.
        labels (np.ndarray): ``[N]`` bool, True for genuine pairs.
        fars (Sequence[float]): Target FARs. Defaults to 1e-6 ... 1e-1.
        rule (str): ``'closest'`` (default): the TAR of the ROC point whose FPR is
            closest to the target (ties: the larger FPR), the rule of the published
            IJB tables; it may exceed the target FAR. ``'strict'``: the largest TAR
            whose FAR is <= the target (0 when no threshold reaches it).

    Returns:
        dict[float, float]: ``{far: tar}``, TAR as a fraction.

    Examples:
        >>> tar_at_far([0.9, 0.8, 0.7, 0.2, 0.1], [1, 1, 0, 1, 0], fars=[0.4])
        {0.4: 1.0}
        >>> tar_at_far([0.9, 0.8, 0.7, 0.2, 0.1], [1, 1, 0, 1, 0], fars=[0.4],
        ...            rule='strict')
        {0.4: 0.6666666666666666}
    """
    if rule not in ('closest', 'strict'):
        raise ValueError(f"rule must be 'closest' or 'strict', got {rule!r}")
    out = {}
    if rule == 'closest':
        fpr, tpr, _ = roc_curve(scores, labels, drop_intermediate=True)
        fpr_r, tpr_r = fpr[::-1], tpr[::-1]
        for far in fars:
            out[far] = float(tpr_r[int(np.argmin(np.abs(fpr_r - far)))])
    else:
        fpr, tpr, _ = roc_curve(scores, labels, drop_intermediate=False)
        for far in fars:
            # fpr is non-decreasing: the last point with fpr <= far has the max tpr.
            idx = int(np.searchsorted(fpr, far, side='right')) - 1
            out[far] = float(tpr[idx]) if idx >= 0 else 0.0
    return out


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids), as ``sklearn.metrics.roc_auc_score``.

    Args:
        scores (np.ndarray): ``[N]`` similarity per pair.
        labels (np.ndarray): ``[N]`` bool, True for genuine pairs.

    Returns:
        float: AUC in [0, 1].
    """
    fpr, tpr, _ = roc_curve(scores, labels, drop_intermediate=True)
    return float(np.trapezoid(tpr, fpr))


def eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """Equal error rate: where the false accept and false reject rates cross.

    The crossing is interpolated linearly between the two ROC points around it.

    Args:
        scores (np.ndarray): ``[N]`` similarity per pair.
        labels (np.ndarray): ``[N]`` bool, True for genuine pairs.

    Returns:
        float: EER as a fraction.

    Examples:
        >>> eer([0.9, 0.8, 0.3, 0.2], [1, 1, 0, 0])
        0.0
    """
    fpr, tpr, _ = roc_curve(scores, labels, drop_intermediate=False)
    fnr = 1 - tpr
    diff = fnr - fpr  # decreasing from 1 to -1
    i = int(np.argmax(diff <= 0))
    if i == 0 or diff[i] == 0:
        return float(fpr[i])
    # Linear interpolation between points i-1 (diff > 0) and i (diff <= 0).
    t = diff[i - 1] / (diff[i - 1] - diff[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))
