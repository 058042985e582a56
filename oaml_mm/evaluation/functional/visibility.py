"""The occlusion head's error against true visibility maps, per occlusion type."""
from typing import Dict, Sequence

import numpy as np

__all__ = ['visibility_mae']


def visibility_mae(pred: np.ndarray, true: np.ndarray,
                   types: Sequence[str]) -> Dict[str, float]:
    """Mean absolute error of visibility maps, overall and per occlusion type.

    Args:
        pred (np.ndarray): Predicted visibility [N, ...] in [0, 1].
        true (np.ndarray): True visibility, same shape.
        types (Sequence[str]): Occlusion type of every image, as the data names
            it (SynthFace's ``<name>.types.txt``): any name, no fixed list.

    Returns:
        dict: ``'all'`` and one entry per type present: the mean over those images
        of the per-image mean absolute error over the cells.

    Examples:
        >>> visibility_mae(np.zeros((2, 4)), np.array([[1., 1, 0, 0], [0] * 4]),
        ...                ['niqab', 'none'])
        {'all': 0.25, 'niqab': 0.5, 'none': 0.0}
    """
    pred = np.asarray(pred, np.float64).reshape(len(types), -1)
    true = np.asarray(true, np.float64).reshape(len(types), -1)
    per_image = np.abs(pred - true).mean(axis=1)
    types = np.asarray(types)
    out = {'all': float(per_image.mean())}
    for t in sorted(set(types.tolist())):
        out[t] = float(per_image[types == t].mean())
    return out
