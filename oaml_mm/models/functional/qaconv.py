"""QAConv matching with optional visibility weighting: the only implementation.

QAConv (Liao & Shao, "Interpretable and Generalizable Person Re-Identification with
Query-Adaptive Convolution", ECCV 2020; layout of the public v2.1 code) scores a probe
and a gallery feature map by correlating every probe cell with every gallery cell,
``s[p, g, r, t] = <probe[p, :, r], gallery[g, :, t]>``, max-pooling over the gallery
cells (one value per probe cell) and over the probe cells (one value per gallery cell),
and mapping the 2*hw maxima through ``BatchNorm1d(1) -> Linear(hw, 1)`` (shared by both
directions) -> sum -> ``BatchNorm1d(1)``.

OAML (the seed report) adds a 7x7 visibility map per image. ``vis_mode`` chooses how it
enters:

* ``'seed'`` (default, exactly the seed): ``s[p, g, r, t] * vis_p[r] * vis_g[t]`` before
  the max pooling. All-ones visibility gives the unweighted score bit for bit; a cell
  with
  zero visibility contributes the constant 0 to every max, so its features cannot change
  the score.
* ``'gate'``: in each direction the *other* image's visibility gates the max
  (``max_t vis_g[t] * s + (1 - vis_g[t]) * (-1)``: an invisible cell can never be the
  best match) and the image's own visibility weights each cell's evidence after the BN,
  divided by its mean visibility (``vis_p[r] / mean(vis_p)``), so evidence from occluded
  cells is dropped instead of being counted as a poor match. Probe and gallery are
  treated symmetrically. The feasibility study in SPEC section 7 found this scheme far
  better than the seed's on occluded pairs.
* ``'none'``: visibility is ignored.

Memory: the correlation of P x G pairs is hw*hw values per pair. It is computed in
chunks of at most ``max_chunk_elems`` values (so no P x G x hw x hw tensor larger than
that exists; a few temporaries of that size do). While a BatchNorm is in training mode
its batch statistics must cover all pairs, so the pooled maxima (2*hw values per pair)
of all chunks are gathered first; in eval mode each chunk is scored on its own.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from oaml_mm.errors import ConfigError

__all__ = [
    'qaconv_match', 'qaconv_match_pairs', 'normalize_maps', 'VIS_MODES',
    'DEFAULT_MAX_CHUNK_ELEMS'
]

VIS_MODES = ('seed', 'gate', 'none')
#: 2**25 values = 128 MiB in fp32 per correlation chunk.
DEFAULT_MAX_CHUNK_ELEMS = 2**25
# Lowest correlation of unit vectors: a gated-out cell takes this value.
_FLOOR = -1.0


def normalize_maps(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """L2-normalise feature maps over channels (QAConv's input convention).

    Args:
        maps (Tensor): [N, C, h, w] or [N, C, hw].
        eps (float): Lower bound of the norm.

    Returns:
        Tensor: Same shape, unit norm along dim 1.
    """
    return F.normalize(maps, p=2, dim=1, eps=eps)


def _flat_maps(maps: torch.Tensor, name: str) -> torch.Tensor:
    if maps.dim() == 4:
        return maps.flatten(2)
    if maps.dim() == 3:
        return maps
    raise ConfigError(
        f'QAConv: {name} must be [N, C, h, w] or [N, C, hw], got shape '
        f'{tuple(maps.shape)}')


def _flat_vis(vis: Optional[torch.Tensor], n: int, hw: int,
              name: str) -> Optional[torch.Tensor]:
    if vis is None:
        return None
    if vis.numel() != n * hw:
        raise ConfigError(
            f'QAConv: {name} has shape {tuple(vis.shape)} ({vis.numel()} values); '
            f'expected {n} maps of {hw} cells (e.g. [{n}, 1, h, w]) matching the '
            'feature maps')
    return vis.reshape(n, hw)


def _check_mode(vis_mode: str) -> None:
    if vis_mode not in VIS_MODES:
        raise ConfigError(
            f'QAConv: vis_mode {vis_mode!r} is not one of {VIS_MODES}')


def _pool(corr: torch.Tensor, vp: Optional[torch.Tensor],
          vg: Optional[torch.Tensor], vis_mode: str
          ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Max-pool a correlation [..., r, t] in both directions.

    ``vp`` / ``vg`` broadcast against [..., hw] (probe cells r / gallery cells t).

    Returns:
        tuple: pooled [..., 2, hw] (0: per probe cell, 1: per gallery cell) and the
        per-cell evidence weights [..., 2, hw] (``'gate'`` only, else None).
    """
    if vis_mode == 'none' or (vp is None and vg is None):
        return torch.stack((corr.amax(dim=-1), corr.amax(dim=-2)), dim=-2), None
    ones = corr.new_ones(())
    vp = ones if vp is None else vp.to(corr.dtype)
    vg = ones if vg is None else vg.to(corr.dtype)
    vp_r = vp.unsqueeze(-1) if vp.dim() else vp
    vg_t = vg.unsqueeze(-2) if vg.dim() else vg
    if vis_mode == 'seed':
        # Two broadcast products: autograd keeps only the small visibility factors.
        w = corr * vp_r * vg_t
        return torch.stack((w.amax(dim=-1), w.amax(dim=-2)), dim=-2), None
    # 'gate': the other side's visibility gates which cells may win the max.
    by_probe = (corr * vg_t + (1 - vg_t) * _FLOOR).amax(dim=-1)
    by_gallery = (corr * vp_r + (1 - vp_r) * _FLOOR).amax(dim=-2)
    pooled = torch.stack((by_probe, by_gallery), dim=-2)
    hw = corr.shape[-1]
    wp = vp / vp.mean(dim=-1, keepdim=True).clamp_min(1e-6) if vp.dim() \
        else vp.expand(hw)
    wg = vg / vg.mean(dim=-1, keepdim=True).clamp_min(1e-6) if vg.dim() \
        else vg.expand(hw)
    lead = pooled.shape[:-2]
    weights = torch.stack(
        (wp.expand(*lead, hw), wg.expand(*lead, hw)), dim=-2)
    return pooled, weights


def _score(pooled: torch.Tensor, weights: Optional[torch.Tensor],
           bn: nn.Module, fc: nn.Module, logit_bn: nn.Module) -> torch.Tensor:
    """BN -> shared FC -> sum of both directions -> logit BN, [..., 2, hw] -> [...]."""
    lead = pooled.shape[:-2]
    hw = pooled.shape[-1]
    x = bn(pooled.float().reshape(-1, 1, hw)).reshape(*lead, 2, hw)
    if weights is not None:
        x = x * weights.float()
    x = fc(x).sum(dim=(-2, -1))
    return logit_bn(x.reshape(-1, 1).float()).reshape(lead)


def _half_dtype(device: torch.device) -> torch.dtype:
    # CPU kernels have no fast fp16 matmul; bf16 is the CPU half type.
    return torch.float16 if device.type == 'cuda' else torch.bfloat16


def _needs_global_stats(*modules: nn.Module) -> bool:
    return any(m.training for m in modules)


def qaconv_match(probe: torch.Tensor,
                 gallery: torch.Tensor,
                 bn: nn.Module,
                 fc: nn.Module,
                 logit_bn: nn.Module,
                 probe_vis: Optional[torch.Tensor] = None,
                 gallery_vis: Optional[torch.Tensor] = None,
                 vis_mode: str = 'seed',
                 max_chunk_elems: int = DEFAULT_MAX_CHUNK_ELEMS,
                 half: bool = False) -> torch.Tensor:
    """QAConv scores of every probe against every gallery map.

    Args:
        probe (Tensor): Probe maps [P, C, h, w] (L2-normalised over C).
        gallery (Tensor): Gallery maps [G, C, h, w] (L2-normalised over C).
        bn (nn.Module): ``BatchNorm1d(1)`` applied to all pooled maxima.
        fc (nn.Module): ``Linear(hw, 1)`` shared by both directions.
        logit_bn (nn.Module): ``BatchNorm1d(1)`` on the summed score.
        probe_vis (Tensor, optional): Probe visibility [P, 1, h, w] in [0, 1].
        gallery_vis (Tensor, optional): Gallery visibility [G, 1, h, w].
        vis_mode (str): ``'seed'``, ``'gate'`` or ``'none'`` (see module doc).
        max_chunk_elems (int): Most correlation values computed at once.
        half (bool): Correlate in fp16 (CUDA) / bf16 (CPU); the BN/FC stay fp32.

    Returns:
        Tensor: Scores [P, G] (fp32).

    Examples:
        >>> bn, fc, lbn = nn.BatchNorm1d(1), nn.Linear(49, 1), nn.BatchNorm1d(1)
        >>> _ = [m.eval() for m in (bn, fc, lbn)]
        >>> p = normalize_maps(torch.randn(3, 8, 7, 7))
        >>> qaconv_match(p, p[:2], bn, fc, lbn).shape
        torch.Size([3, 2])
    """
    _check_mode(vis_mode)
    probe = _flat_maps(probe, 'probe maps')
    gallery = _flat_maps(gallery, 'gallery maps')
    if probe.shape[1:] != gallery.shape[1:]:
        raise ConfigError(
            f'QAConv: probe maps {tuple(probe.shape)} and gallery maps '
            f'{tuple(gallery.shape)} differ in channels or cells')
    n_p, _, hw = probe.shape
    n_g = gallery.shape[0]
    vp = _flat_vis(probe_vis, n_p, hw, 'probe_vis')
    vg = _flat_vis(gallery_vis, n_g, hw, 'gallery_vis')
    if half:
        dtype = _half_dtype(probe.device)
        probe, gallery = probe.to(dtype), gallery.to(dtype)
    pairs = max(1, int(max_chunk_elems) // (hw * hw))
    gc = min(n_g, pairs)
    pc = min(n_p, max(1, pairs // max(gc, 1)))
    global_stats = _needs_global_stats(bn, logit_bn)
    rows, pooled_rows, weight_rows = [], [], []
    for p0 in range(0, n_p, pc):
        p_chunk = probe[p0:p0 + pc]
        vp_c = None if vp is None else vp[p0:p0 + pc, None, :]
        cols, pooled_cols, weight_cols = [], [], []
        for g0 in range(0, n_g, gc):
            g_chunk = gallery[g0:g0 + gc]
            vg_c = None if vg is None else vg[None, g0:g0 + gc, :]
            corr = torch.einsum('pcr,gct->pgrt', p_chunk, g_chunk)
            pooled, weights = _pool(corr, vp_c, vg_c, vis_mode)
            del corr
            if global_stats:
                pooled_cols.append(pooled)
                weight_cols.append(weights)
            else:
                cols.append(_score(pooled, weights, bn, fc, logit_bn))
        if global_stats:
            pooled_rows.append(torch.cat(pooled_cols, dim=1))
            weight_rows.append(None if weight_cols[0] is None else torch.cat(
                weight_cols, dim=1))
        else:
            rows.append(torch.cat(cols, dim=1))
    if global_stats:
        pooled = torch.cat(pooled_rows, dim=0)
        weights = None if weight_rows[0] is None else torch.cat(
            weight_rows, dim=0)
        return _score(pooled, weights, bn, fc, logit_bn)
    return torch.cat(rows, dim=0)


def qaconv_match_pairs(maps_a: torch.Tensor,
                       maps_b: torch.Tensor,
                       bn: nn.Module,
                       fc: nn.Module,
                       logit_bn: nn.Module,
                       vis_a: Optional[torch.Tensor] = None,
                       vis_b: Optional[torch.Tensor] = None,
                       vis_mode: str = 'seed',
                       max_chunk_elems: int = DEFAULT_MAX_CHUNK_ELEMS,
                       half: bool = False) -> torch.Tensor:
    """QAConv scores of listed pairs ``(a[i], b[i])``, never the full matrix.

    ``maps_a`` plays the probe role. Used for verification pairs and IJB template
    pairs, where only N of the N x N scores are needed.

    Args:
        maps_a (Tensor): [N, C, h, w], L2-normalised over C.
        maps_b (Tensor): [N, C, h, w], L2-normalised over C.
        bn, fc, logit_bn (nn.Module): As in :func:`qaconv_match`.
        vis_a (Tensor, optional): Visibility of ``maps_a`` [N, 1, h, w].
        vis_b (Tensor, optional): Visibility of ``maps_b`` [N, 1, h, w].
        vis_mode (str): ``'seed'``, ``'gate'`` or ``'none'``.
        max_chunk_elems (int): Most correlation values computed at once.
        half (bool): Correlate in half precision.

    Returns:
        Tensor: Scores [N] (fp32); equal to the diagonal of
        ``qaconv_match(maps_a, maps_b, ...)``.
    """
    _check_mode(vis_mode)
    a = _flat_maps(maps_a, 'maps_a')
    b = _flat_maps(maps_b, 'maps_b')
    if a.shape != b.shape:
        raise ConfigError(
            f'QAConv: pair maps must have equal shapes, got {tuple(a.shape)} '
            f'and {tuple(b.shape)}')
    n, _, hw = a.shape
    va = _flat_vis(vis_a, n, hw, 'vis_a')
    vb = _flat_vis(vis_b, n, hw, 'vis_b')
    if half:
        dtype = _half_dtype(a.device)
        a, b = a.to(dtype), b.to(dtype)
    nc = max(1, int(max_chunk_elems) // (hw * hw))
    global_stats = _needs_global_stats(bn, logit_bn)
    scores, pooled_all, weights_all = [], [], []
    for i in range(0, n, nc):
        corr = torch.einsum('ncr,nct->nrt', a[i:i + nc], b[i:i + nc])
        pooled, weights = _pool(corr, None if va is None else va[i:i + nc],
                                None if vb is None else vb[i:i + nc],
                                vis_mode)
        del corr
        if global_stats:
            pooled_all.append(pooled)
            weights_all.append(weights)
        else:
            scores.append(_score(pooled, weights, bn, fc, logit_bn))
    if global_stats:
        weights = None if weights_all[0] is None else torch.cat(weights_all)
        return _score(torch.cat(pooled_all), weights, bn, fc, logit_bn)
    return torch.cat(scores)
