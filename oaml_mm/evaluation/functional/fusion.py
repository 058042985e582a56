"""Score fusion of the AdaFace (cosine) and QAConv branches.

The seed fuses ``w_a * adaface + w_q * qaconv`` (0.5/0.5). The two scores live on
different scales (cosine in [-1, 1]; QAConv logits after a BatchNorm, typically tens),
so a plain sum is dominated by QAConv. Each branch is first standardised by the mean and
std of its impostor-pair scores (z-norm, the usual score normalisation in biometrics),
which puts "how far above a random impostor" on a common unit; the weights then mean
what they say. The calibration is an affine map per branch, so it changes no
single-branch metric.
"""
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ['impostor_stats', 'fuse_scores']


def impostor_stats(scores: np.ndarray,
                   labels: Optional[np.ndarray] = None) -> Tuple[float, float]:
    """Mean and std of the impostor scores (all scores when ``labels`` is None).

    Args:
        scores (np.ndarray): ``[N]`` scores of one branch.
        labels (np.ndarray, optional): ``[N]`` bool, True for genuine pairs.

    Returns:
        tuple[float, float]: ``(mean, std)``; std is at least 1e-12.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels is not None:
        neg = s[~np.asarray(labels).astype(bool).reshape(-1)]
        s = neg if neg.size > 1 else s
    return float(s.mean()), float(max(s.std(), 1e-12))


def fuse_scores(branch_scores: Sequence[np.ndarray],
                weights: Sequence[float],
                stats: Optional[Sequence[Tuple[float, float]]] = None,
                labels: Optional[np.ndarray] = None) -> np.ndarray:
    """Weighted sum of standardised branch scores.

    Args:
        branch_scores (Sequence[np.ndarray]): One ``[N]`` (or any shape) array per
            branch.
        weights (Sequence[float]): One weight per branch.
        stats (Sequence[tuple], optional): ``(mean, std)`` per branch; computed with
            :func:`impostor_stats` from ``labels`` when None.
        labels (np.ndarray, optional): Genuine flags used for the statistics.

    Returns:
        np.ndarray: ``sum_b w_b * (s_b - mean_b) / std_b``.

    Examples:
        >>> fuse_scores([np.array([0., 2.]), np.array([10., 30.])], [0.5, 0.5],
        ...             stats=[(0., 1.), (10., 10.)]).tolist()
        [0.0, 2.0]
    """
    if len(branch_scores) != len(weights):
        raise ValueError(f'{len(branch_scores)} branches but {len(weights)} '
                         'weights')
    if stats is None:
        stats = [impostor_stats(s, labels) for s in branch_scores]
    out = None
    for s, w, (mu, sd) in zip(branch_scores, weights, stats):
        z = w * (np.asarray(s, dtype=np.float64) - mu) / sd
        out = z if out is None else out + z
    return out
