"""1:N identification (IJB-B/IJB-C "mixed" probes against gallery sets).

Closed-set rank-k: a mated probe (its subject has a gallery template) is a hit at rank
k when its mate is among the k most similar gallery templates. Open-set TPIR@FPIR
(NIST's IJB-C definition, as in insightface's ``IJB_1N.py``): the threshold is set on
the best gallery score of the non-mated probes so that a fraction FPIR of them would
raise a false alarm; a mated probe counts when its mate is at rank 1 and scores at
or above that threshold.
"""
from typing import Dict, Sequence

import numpy as np

__all__ = ['identification_1n']


def identification_1n(scores: np.ndarray,
                      probe_subjects: Sequence[int],
                      gallery_subjects: Sequence[int],
                      ranks: Sequence[int] = (1, 5, 10),
                      fpirs: Sequence[float] = (0.01, 0.1)) -> Dict[str, float]:
    """Rank-k identification rate and TPIR@FPIR from a probe x gallery score matrix.

    Args:
        scores (np.ndarray): ``[P, G]`` similarities.
        probe_subjects (Sequence[int]): ``[P]`` subject of each probe template.
        gallery_subjects (Sequence[int]): ``[G]`` subject of each gallery template.
        ranks (Sequence[int]): Ranks to report. Defaults to (1, 5, 10).
        fpirs (Sequence[float]): FPIR targets for open-set TPIR. Defaults to
            (0.01, 0.1). Skipped (NaN) when every probe is mated.

    Returns:
        dict[str, float]: ``rank{k}`` and ``TPIR@FPIR={fpir:.0e}`` as fractions.

    Examples:
        >>> s = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.6], [0.3, 0.2]])
        >>> r = identification_1n(s, [1, 2, 2, 9], [1, 2], ranks=(1, 2),
        ...                       fpirs=(1.0,))
        >>> r['rank1'], r['rank2'], r['TPIR@FPIR=1e+00']
        (0.6666666666666666, 1.0, 0.6666666666666666)
    """
    scores = np.asarray(scores, dtype=np.float64)
    probe_subjects = np.asarray(probe_subjects)
    gallery_subjects = np.asarray(gallery_subjects)
    if scores.shape != (len(probe_subjects), len(gallery_subjects)):
        raise ValueError(f'scores {scores.shape} do not match '
                         f'{len(probe_subjects)} probes x '
                         f'{len(gallery_subjects)} gallery templates')
    is_mate = probe_subjects[:, None] == gallery_subjects[None, :]
    mated = is_mate.any(1)
    out: Dict[str, float] = {}
    if mated.any():
        s_m = scores[mated]
        mate_score = np.where(is_mate[mated], s_m, -np.inf).max(1)
        # rank of the best mate = number of gallery entries scoring strictly higher
        better = (s_m > mate_score[:, None]).sum(1)
        for k in ranks:
            out[f'rank{k}'] = float((better < k).mean())
    else:
        for k in ranks:
            out[f'rank{k}'] = float('nan')
    non_mated = ~mated
    for fpir in fpirs:
        key = f'TPIR@FPIR={fpir:.0e}'
        if not non_mated.any() or not mated.any():
            out[key] = float('nan')
            continue
        best_nm = np.sort(scores[non_mated].max(1))[::-1]
        # The threshold lets through floor(FPIR * N) non-mated probes (none if 0).
        n_alarm = int(np.floor(fpir * len(best_nm)))
        thr = best_nm[n_alarm - 1] if n_alarm > 0 else np.nextafter(
            best_nm[0], np.inf)
        hit = (better < 1) & (mate_score >= thr)
        out[key] = float(hit.mean())
    return out
