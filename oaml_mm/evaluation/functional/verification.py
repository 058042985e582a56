"""10-fold face verification accuracy.

The protocol is the one of insightface's ``verification.py`` as used by AdaFace
(Deng et al., "ArcFace", CVPR 2019; Kim et al., "AdaFace", CVPR 2022): pairs are the
embeddings ``[0::2]`` and ``[1::2]``, the distance is the squared L2 distance of unit
embeddings, the thresholds are ``arange(0, 4, 0.01)``, the folds are contiguous blocks
(``KFold(10, shuffle=False)``) and the best threshold of the nine training folds is the
first one that maximises their accuracy. Published LFW/CFP-FP/AgeDB numbers use it.

Scores that are not cosine distances (QAConv, fused) have no natural grid, so
:func:`verification_10fold_scores` takes its thresholds from the scores themselves.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ['kfold_split', 'verification_10fold', 'verification_10fold_scores',
           'score_thresholds']


def kfold_split(num_samples: int,
                num_folds: int = 10) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Contiguous folds, identical to ``sklearn.model_selection.KFold(shuffle=False)``.

    The first ``num_samples % num_folds`` folds hold one sample more than the others.

    Args:
        num_samples (int): Number of samples (pairs).
        num_folds (int): Number of folds. Defaults to 10.

    Returns:
        list[tuple[np.ndarray, np.ndarray]]: ``(train_indices, test_indices)`` per fold.

    Examples:
        >>> [t.tolist() for _, t in kfold_split(5, 2)]
        [[0, 1, 2], [3, 4]]
    """
    if num_folds < 2 or num_folds > num_samples:
        raise ValueError(f'cannot split {num_samples} pairs into {num_folds} '
                         'folds (need 2 <= folds <= pairs)')
    sizes = np.full(num_folds, num_samples // num_folds, dtype=np.int64)
    sizes[:num_samples % num_folds] += 1
    indices = np.arange(num_samples)
    folds = []
    start = 0
    for size in sizes:
        test = indices[start:start + size]
        train = np.concatenate([indices[:start], indices[start + size:]])
        folds.append((train, test))
        start += size
    return folds


def _accuracy_per_threshold(values: np.ndarray, labels: np.ndarray,
                            thresholds: np.ndarray,
                            same_if_below: bool) -> np.ndarray:
    """Accuracy of ``predict same = value < t`` (or ``value > t``) for every ``t``.

    Counting with ``searchsorted`` on sorted values gives the same integers as the
    broadcast comparison of the reference code, in O(n log n) instead of O(n*T).
    """
    pos = np.sort(values[labels])
    neg = np.sort(values[~labels])
    if same_if_below:
        tp = np.searchsorted(pos, thresholds, side='left')
        tn = len(neg) - np.searchsorted(neg, thresholds, side='left')
    else:
        tp = len(pos) - np.searchsorted(pos, thresholds, side='right')
        tn = np.searchsorted(neg, thresholds, side='right')
    return (tp + tn).astype(np.float64) / max(len(values), 1)


def _kfold_accuracy(values: np.ndarray, labels: np.ndarray,
                    thresholds: np.ndarray, num_folds: int,
                    same_if_below: bool) -> Dict[str, object]:
    labels = np.asarray(labels).astype(bool).reshape(-1)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.shape[0] != labels.shape[0]:
        raise ValueError(f'{values.shape[0]} scores but {labels.shape[0]} labels')
    fold_acc = np.zeros(num_folds)
    fold_thr = np.zeros(num_folds)
    for k, (train, test) in enumerate(kfold_split(len(values), num_folds)):
        acc_train = _accuracy_per_threshold(values[train], labels[train],
                                            thresholds, same_if_below)
        best = int(np.argmax(acc_train))  # first best, as the reference
        fold_thr[k] = thresholds[best]
        fold_acc[k] = _accuracy_per_threshold(values[test], labels[test],
                                              thresholds[best:best + 1],
                                              same_if_below)[0]
    return dict(
        accuracy=float(fold_acc.mean()),
        std=float(fold_acc.std()),
        threshold=float(fold_thr.mean()),
        fold_accuracy=fold_acc,
        fold_threshold=fold_thr)


def verification_10fold(
        embeddings: np.ndarray,
        issame: Sequence[bool],
        nrof_folds: int = 10,
        thresholds: Optional[np.ndarray] = None) -> Dict[str, object]:
    """Verification accuracy with the insightface/AdaFace 10-fold protocol.

    Args:
        embeddings (np.ndarray): ``[2N, D]`` unit embeddings, the two images of pair
            ``i`` at rows ``2i`` and ``2i+1``. They are not re-normalised, so that
            unit inputs give bit-identical distances to the reference.
        issame (Sequence[bool]): ``[N]`` ground truth per pair.
        nrof_folds (int): Number of folds. Defaults to 10.
        thresholds (np.ndarray, optional): Distance thresholds; a pair is "same" when
            its squared L2 distance is below the threshold. Defaults to
            ``np.arange(0, 4, 0.01)``.

    Returns:
        dict: ``accuracy`` (mean test-fold accuracy, a fraction), ``std`` (population
        std over folds), ``threshold`` (mean best distance threshold),
        ``fold_accuracy`` and ``fold_threshold`` (arrays ``[nrof_folds]``).

    Examples:
        >>> emb = np.eye(4)[[0, 0, 1, 2] * 10].astype(np.float32)
        >>> verification_10fold(emb, [True, False] * 10)['accuracy']
        1.0
    """
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[0] % 2:
        raise ValueError('embeddings must be [2N, D] with interleaved pairs, got '
                         f'shape {tuple(embeddings.shape)}')
    if thresholds is None:
        thresholds = np.arange(0, 4, 0.01)
    diff = np.subtract(embeddings[0::2], embeddings[1::2])
    dist = np.sum(np.square(diff), 1)
    return _kfold_accuracy(dist, np.asarray(issame), np.asarray(thresholds),
                           nrof_folds, same_if_below=True)


def score_thresholds(scores: np.ndarray) -> np.ndarray:
    """Candidate thresholds of a similarity score: midpoints of its sorted values.

    One threshold below the minimum and one above the maximum are added, so "all
    same" and "all different" are candidates too.

    Args:
        scores (np.ndarray): Scores of any scale.

    Returns:
        np.ndarray: Increasing thresholds, ``len(unique(scores)) + 1`` of them.
    """
    u = np.unique(np.asarray(scores, dtype=np.float64))
    if len(u) == 0:
        return np.zeros(1)
    span = max(float(u[-1] - u[0]), 1.0)
    return np.concatenate([[u[0] - span], (u[:-1] + u[1:]) / 2,
                           [u[-1] + span]])


def verification_10fold_scores(scores: np.ndarray,
                               issame: Sequence[bool],
                               nrof_folds: int = 10) -> Dict[str, object]:
    """10-fold verification accuracy of an arbitrary similarity score.

    Same folds and first-best rule as :func:`verification_10fold`, but a pair is
    "same" when its score is *above* the threshold and the candidate thresholds are
    :func:`score_thresholds` of all scores (label-free, like the fixed grid).

    Args:
        scores (np.ndarray): ``[N]`` similarity per pair (higher = more similar).
        issame (Sequence[bool]): ``[N]`` ground truth.
        nrof_folds (int): Number of folds. Defaults to 10.

    Returns:
        dict: Same keys as :func:`verification_10fold`; ``threshold`` is a score.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    return _kfold_accuracy(scores, np.asarray(issame), score_thresholds(scores),
                           nrof_folds, same_if_below=False)
