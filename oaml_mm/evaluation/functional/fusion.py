"""Score fusion of the AdaFace (cosine) and QAConv branches.

The seed fuses ``w_a * adaface + w_q * qaconv`` (0.5/0.5). The two scores live on
different scales (cosine in [-1, 1]; QAConv logits after a BatchNorm, typically tens),
so a plain sum is dominated by QAConv. Each branch is first standardised by the mean and
std of its impostor-pair scores (z-norm, the usual score normalisation in biometrics),
which puts "how far above a random impostor" on a common unit; the weights then mean
what they say. The calibration is an affine map per branch, so it changes no
single-branch metric.

The visibility-aware fusion (:func:`fit_visibility_fusion`) learns, on a held-out
calibration split, how much each branch should count given how visible the two
faces are (docs/evaluation.md, "Visibility-aware fusion"). Its visibility is the
mean of the map the model's matcher reads, the predicted map calibrated by the
model's ``vis_range`` (docs/models.md, "Stretching the maps"); the parameters record
that calibration (``vis_range``; absent in parameters fitted before it was recorded:
the raw map), and applying them reads the same map
(:func:`fusion_mean_visibility`).
"""
from typing import Optional, Sequence, Tuple

import numpy as np

from oaml_mm.errors import ConfigError
from oaml_mm.models.functional.visibility import (calibrate_visibility,
                                                  check_vis_range)

__all__ = ['impostor_stats', 'fuse_scores', 'VIS_FUSION_VERSION',
           'VIS_FUSION_FEATURES', 'visibility_fusion_features',
           'fit_visibility_fusion', 'check_visibility_fusion',
           'apply_visibility_fusion', 'mean_visibility', 'fusion_vis_range',
           'fusion_mean_visibility']


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


#: ``version`` of the parameter dict :func:`fit_visibility_fusion` returns.
VIS_FUSION_VERSION = 1
#: Names of the features :func:`visibility_fusion_features` builds, in order.
VIS_FUSION_FEATURES = ('z_adaface', 'z_qaconv', 'v_min', 'v_max',
                       'z_adaface*v_min', 'z_qaconv*v_min')


def visibility_fusion_features(z_cos: np.ndarray, z_q: np.ndarray,
                               vis_a: np.ndarray,
                               vis_b: np.ndarray) -> np.ndarray:
    """Features of the visibility-aware fusion, symmetric in the two faces.

    The less visible face of a pair (``v_min``) bounds how much its local parts
    can be matched and how trustworthy its global embedding is; the products let
    the weight of each branch depend on it.

    Args:
        z_cos (np.ndarray): ``[N]`` impostor-z-normed AdaFace cosines.
        z_q (np.ndarray): ``[N]`` impostor-z-normed QAConv scores.
        vis_a (np.ndarray): ``[N]`` mean predicted visibility of the first
            faces, in [0, 1].
        vis_b (np.ndarray): ``[N]`` same for the second faces.

    Returns:
        np.ndarray: ``[N, 6]`` float64, columns :data:`VIS_FUSION_FEATURES`.
    """
    z_cos = np.asarray(z_cos, np.float64).reshape(-1)
    z_q = np.asarray(z_q, np.float64).reshape(-1)
    va = np.asarray(vis_a, np.float64).reshape(-1)
    vb = np.asarray(vis_b, np.float64).reshape(-1)
    sizes = {z_cos.size, z_q.size, va.size, vb.size}
    if len(sizes) != 1:
        raise ConfigError('visibility fusion: cos, qaconv, vis_a and vis_b '
                          f'must have one value per pair, got sizes '
                          f'{[z_cos.size, z_q.size, va.size, vb.size]}')
    v_min, v_max = np.minimum(va, vb), np.maximum(va, vb)
    return np.stack([z_cos, z_q, v_min, v_max, z_cos * v_min, z_q * v_min], 1)


def fit_visibility_fusion(cos: np.ndarray,
                          qaconv: np.ndarray,
                          vis_a: np.ndarray,
                          vis_b: np.ndarray,
                          labels: np.ndarray,
                          C: float = 1.0,
                          source: str = '',
                          vis_range: Optional[Sequence[float]] = None) -> dict:
    """Fit visibility-dependent weights of the AdaFace and QAConv scores.

    A logistic regression (scikit-learn, L2 penalty ``C``, lbfgs, balanced
    classes) on :func:`visibility_fusion_features` of calibration pairs: the
    z-normed scores (impostor statistics of these pairs, :func:`impostor_stats`),
    the smaller and larger mean visibility of the two faces and the products of
    each score with the smaller one. Its logit is the fused score; with the
    products the weight of each branch is an affine function of ``v_min``. This
    is learned score-level fusion with quality measures (Poh et al., "A
    Unified Framework for Biometric Expert Fusion Incorporating Quality
    Measures", IEEE TPAMI 2012); docs/evaluation.md, "Visibility-aware fusion".

    The pairs must not be the ones it is evaluated on (a held-out calibration
    split). lbfgs on a strictly convex objective has one optimum, so the fit
    does not depend on the order of the pairs or on the CPU beyond float
    rounding.

    Args:
        cos (np.ndarray): ``[N]`` AdaFace cosines.
        qaconv (np.ndarray): ``[N]`` QAConv scores.
        vis_a (np.ndarray): ``[N]`` mean visibility of the first faces, of
            the map calibrated by ``vis_range``
            (:func:`fusion_mean_visibility`).
        vis_b (np.ndarray): ``[N]`` of the second faces.
        labels (np.ndarray): ``[N]`` bool, True for genuine pairs.
        C (float): Inverse L2 regularisation strength. Defaults to 1.0.
        source (str): Where the pairs came from (kept for the record).
        vis_range (Sequence[float], optional): The calibration of the map
            ``vis_a`` / ``vis_b`` are means of (the model's
            ``test_cfg.vis_range``); None: the raw predicted map. Recorded, so
            that applying the parameters reads the same map.

    Returns:
        dict: JSON-able (floats, ints, strings, lists): ``version``,
        ``features`` (names), ``z_stats`` ({'adaface': [mean, std],
        'qaconv': [...]}), ``coef`` (one per feature), ``intercept``, ``C``,
        ``num_pairs``, ``source``, ``vis_range`` (None or ``[low, high]``).
        Goes into checkpoint meta as is.

    Raises:
        ConfigError: Non-finite inputs, mismatched sizes, one class only, or
            a malformed ``vis_range``.
    """
    from sklearn.linear_model import LogisticRegression
    labels = np.asarray(labels).astype(bool).reshape(-1)
    cos = np.asarray(cos, np.float64).reshape(-1)
    qaconv = np.asarray(qaconv, np.float64).reshape(-1)
    if labels.size != cos.size:
        raise ConfigError(f'visibility fusion: {labels.size} labels for '
                          f'{cos.size} pairs')
    if labels.all() or not labels.any():
        raise ConfigError('visibility fusion: the calibration pairs need both '
                          'genuine and impostor pairs')
    if not 0 < C < np.inf:
        raise ConfigError(f'visibility fusion: C must be positive, got {C}')
    vis_range = check_vis_range(vis_range)
    stats = [impostor_stats(cos, labels), impostor_stats(qaconv, labels)]
    x = visibility_fusion_features((cos - stats[0][0]) / stats[0][1],
                                   (qaconv - stats[1][0]) / stats[1][1],
                                   vis_a, vis_b)
    if not np.isfinite(x).all():
        raise ConfigError('visibility fusion: non-finite scores or visibility '
                          'among the calibration pairs')
    clf = LogisticRegression(C=float(C), solver='lbfgs', max_iter=1000,
                             tol=1e-8, class_weight='balanced')
    clf.fit(x, labels)
    return dict(version=VIS_FUSION_VERSION,
                features=list(VIS_FUSION_FEATURES),
                z_stats={'adaface': [float(v) for v in stats[0]],
                         'qaconv': [float(v) for v in stats[1]]},
                coef=[float(c) for c in clf.coef_.reshape(-1)],
                intercept=float(clf.intercept_.reshape(-1)[0]),
                C=float(C), num_pairs=int(labels.size), source=str(source),
                vis_range=None if vis_range is None else
                [float(v) for v in vis_range])


def check_visibility_fusion(params: dict,
                            where: str = 'visibility fusion params') -> dict:
    """Check a parameter dict of :func:`fit_visibility_fusion`.

    Args:
        params (dict): The dict (from checkpoint meta or a config).
        where (str): Named in the error, e.g. the checkpoint path and meta key.

    Returns:
        dict: ``params`` unchanged.

    Raises:
        ConfigError: A field is missing or malformed; the message names it.
    """

    def bad(field: str, expected: str):
        got = params.get(field, '<missing>') if isinstance(params, dict) \
            else params
        return ConfigError(f'{where}: field {field!r} must be {expected}, got '
                           f'{got!r}')

    def finite(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and \
            bool(np.isfinite(v))

    if not isinstance(params, dict):
        raise ConfigError(f'{where}: must be a dict, got '
                          f'{type(params).__name__}')
    if params.get('version') != VIS_FUSION_VERSION:
        raise bad('version', str(VIS_FUSION_VERSION))
    if list(params.get('features', ())) != list(VIS_FUSION_FEATURES):
        raise bad('features', str(list(VIS_FUSION_FEATURES)))
    zs = params.get('z_stats')
    if not isinstance(zs, dict) or any(
            not isinstance(zs.get(b), (list, tuple)) or len(zs[b]) != 2
            or not all(finite(v) for v in zs[b]) or not zs[b][1] > 0
            for b in ('adaface', 'qaconv')):
        raise bad('z_stats', "{'adaface': [mean, std > 0], 'qaconv': [mean, "
                  'std > 0]} of finite numbers')
    coef = params.get('coef')
    if not isinstance(coef, (list, tuple)) or len(coef) != len(
            VIS_FUSION_FEATURES) or not all(finite(c) for c in coef):
        raise bad('coef', f'{len(VIS_FUSION_FEATURES)} finite numbers')
    if not finite(params.get('intercept')):
        raise bad('intercept', 'a finite number')
    try:
        check_vis_range(params.get('vis_range'))
    except ConfigError:
        raise bad('vis_range', 'absent, None or [low, high] with '
                  '0 <= low < high <= 1') from None
    return params


def apply_visibility_fusion(params: dict, cos: np.ndarray, qaconv: np.ndarray,
                            vis_a: np.ndarray,
                            vis_b: np.ndarray) -> np.ndarray:
    """The visibility-aware fused score (the fitted logit) of pairs.

    Args:
        params (dict): What :func:`fit_visibility_fusion` returned.
        cos (np.ndarray): ``[N]`` AdaFace cosines.
        qaconv (np.ndarray): ``[N]`` QAConv scores.
        vis_a (np.ndarray): ``[N]`` mean visibility of the first faces, of the
            map the parameters were fitted on (:func:`fusion_mean_visibility`).
        vis_b (np.ndarray): ``[N]`` of the second faces.

    Returns:
        np.ndarray: ``[N]`` float64 log-odds of "same person" (higher: more
        alike); symmetric in the two faces.

    Raises:
        ConfigError: Malformed ``params`` (:func:`check_visibility_fusion`) or
            inputs of different sizes.
    """
    check_visibility_fusion(params)
    (ma, sa), (mq, sq) = params['z_stats']['adaface'], params['z_stats'][
        'qaconv']
    x = visibility_fusion_features(
        (np.asarray(cos, np.float64) - ma) / sa,
        (np.asarray(qaconv, np.float64) - mq) / sq, vis_a, vis_b)
    return x @ np.asarray(params['coef'], np.float64) + float(
        params['intercept'])


def mean_visibility(vis) -> np.ndarray:
    """Mean predicted visibility per image (or template) of a visibility map.

    Args:
        vis (np.ndarray | torch.Tensor): ``[N, 1, h, w]`` (or ``[N, ...]``)
            visibility in [0, 1].

    Returns:
        np.ndarray: ``[N]`` float64.
    """
    v = vis.detach().double().cpu().numpy() if hasattr(vis, 'detach') else \
        np.asarray(vis, np.float64)
    return v.reshape(v.shape[0], -1).mean(1)


def fusion_vis_range(params: Optional[dict]) -> Optional[Tuple[float, float]]:
    """The calibration of the map a visibility fusion was fitted on.

    Args:
        params (dict, optional): What :func:`fit_visibility_fusion` returned.

    Returns:
        tuple or None: ``(low, high)``; None for the raw predicted map, which
        is also what parameters without the field (fitted before it was
        recorded) were fitted on.

    Raises:
        ConfigError: A malformed ``vis_range`` field.
    """
    if not params:
        return None
    return check_vis_range(params.get('vis_range'))


def fusion_mean_visibility(params: Optional[dict], vis) -> np.ndarray:
    """Mean visibility per face of the map ``params`` were fitted on.

    The raw predicted map stretched by the recorded calibration
    (:func:`fusion_vis_range`, then
    :func:`~oaml_mm.models.functional.visibility.calibrate_visibility`), so
    that parameters are applied to the quantity they were fitted on, whatever
    the model's calibration is now.

    Args:
        params (dict, optional): A visibility fusion (None: the raw map).
        vis (torch.Tensor | np.ndarray): ``[N, 1, h, w]`` (or ``[N, ...]``)
            raw predicted visibility in [0, 1].

    Returns:
        np.ndarray: ``[N]`` float64.

    Examples:
        >>> v = np.array([[0.2, 0.6, 0.9]])
        >>> fusion_mean_visibility({'vis_range': [0.3, 0.7]}, v).round(4)
        array([0.5833])
        >>> fusion_mean_visibility({}, v).round(4)     # fitted on the raw map
        array([0.5667])
    """
    import torch
    vr = fusion_vis_range(params)
    if vr is None:
        return mean_visibility(vis)
    t = vis.detach().double().cpu() if hasattr(vis, 'detach') else \
        torch.as_tensor(np.asarray(vis, np.float64))
    return mean_visibility(calibrate_visibility(t, vr))
