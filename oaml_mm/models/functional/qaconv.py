"""QAConv matching with optional visibility weighting: the only implementation.

QAConv (Liao & Shao, "Interpretable and Generalizable Person Re-Identification with
Query-Adaptive Convolution", ECCV 2020; layout of the public v2.1 code) scores a probe
and a gallery feature map by correlating every probe cell with every gallery cell,
``s[p, g, r, t] = <probe[p, :, r], gallery[g, :, t]>``, max-pooling over the gallery
cells (one value per probe cell) and over the probe cells (one value per gallery cell),
and mapping the 2*hw maxima through ``BatchNorm1d(1) -> Linear(hw, 1)`` (shared by both
directions) -> sum -> ``BatchNorm1d(1)``.

OAML (docs/models.md) adds a 7x7 visibility map per image. ``vis_mode`` chooses how it
enters:

* ``'multiply'`` (default, the original OAML rule; ``'seed'`` is its old name and still
  accepted): ``s[p, g, r, t] * vis_p[r] * vis_g[t]`` before the max pooling. All-ones
  visibility gives the unweighted score bit for bit; a cell with zero visibility
  contributes the constant 0 to every max, so its features cannot change the score.
* ``'gate'``: in each direction the *other* image's visibility gates the max
  (``max_t vis_g[t] * s + (1 - vis_g[t]) * (-1)``: an invisible cell can never be the
  best match) and the image's own visibility weights each cell's evidence after the BN,
  divided by its mean visibility (``vis_p[r] / mean(vis_p)``), so evidence from occluded
  cells is dropped instead of being counted as a poor match. Probe and gallery are
  treated symmetrically. The CPU feasibility study (docs/synthface.md) found this scheme
  far better than ``'multiply'`` on occluded pairs.
* ``'none'``: visibility is ignored.

Memory: the correlation of P x G pairs is hw*hw values per pair. It is computed in
chunks of at most ``max_chunk_elems`` values (so no P x G x hw x hw tensor larger than
that exists; in ``'gate'`` mode one temporary of that size sits beside it). While a
BatchNorm is in training mode its batch statistics must cover all pairs, so the pooled
maxima (2*hw values per pair) of all chunks are gathered first; in eval mode each chunk
is scored on its own.

Speed (``benchmarks/bench_qaconv.py``, ``docs/benchmarks.md``): a chunk's correlation
is one plain matrix product ``[pc*hw, C] x [C, hw*gc]`` whose output is laid out
``[pc, r, t, gc]`` (gallery index innermost), so both max reductions run over an outer
dimension and vectorise along the contiguous gallery axis; a max over the innermost
49 cells is several times slower, and ``einsum`` misses the AMX bf16 kernel on CPU.
The ``'multiply'`` weighting ``s * vis_p[r] * vis_g[t]`` equals the correlation of maps
pre-scaled by their visibility, so it costs one pass over the inputs instead of two
over the correlation. Chunks are also kept near ``_CHUNK_TARGET_ELEMS`` values,
which measured faster than both smaller and larger blocks on a 2 MiB L2 cache.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from oaml_mm.errors import ConfigError

__all__ = [
    'qaconv_match', 'qaconv_match_pairs', 'normalize_maps', 'VIS_MODES',
    'VIS_MODE_ALIASES', 'canonical_vis_mode', 'DEFAULT_MAX_CHUNK_ELEMS'
]

VIS_MODES = ('multiply', 'gate', 'none')
#: Old names still accepted in configs and calls -> the mode they mean.
VIS_MODE_ALIASES = {'seed': 'multiply'}
#: 2**25 values = 128 MiB in fp32 per correlation chunk.
DEFAULT_MAX_CHUNK_ELEMS = 2**25
# Lowest correlation of unit vectors: a gated-out cell takes this value.
_FLOOR = -1.0
# Chunk shape for speed (measured, see module doc); max_chunk_elems stays the cap.
_CHUNK_TARGET_ELEMS = 2**22
_GALLERY_CHUNK = 64


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


def canonical_vis_mode(vis_mode: str) -> str:
    """The mode ``vis_mode`` names: one of :data:`VIS_MODES` (old names mapped).

    Raises:
        ConfigError: Neither a mode nor an old name of one.
    """
    vis_mode = VIS_MODE_ALIASES.get(vis_mode, vis_mode)
    if vis_mode not in VIS_MODES:
        raise ConfigError(
            f'QAConv: vis_mode {vis_mode!r} is not one of {VIS_MODES} (or the '
            f'old names {tuple(VIS_MODE_ALIASES)})')
    return vis_mode


def _pool(corr: torch.Tensor, vp: Optional[torch.Tensor],
          vg: Optional[torch.Tensor],
          vis_mode: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Max-pool a correlation laid out ``[n, r, t, ...]`` in both directions.

    ``'seed'`` weighting is applied to the maps before the correlation, so only
    ``'gate'`` needs ``vp`` / ``vg`` here; they arrive shaped to broadcast against
    ``corr`` (probe cells along dim 1, gallery cells along dim 2).

    Returns:
        tuple: per probe cell ``[n, r, ...]`` (max over t) and per gallery cell
        ``[n, t, ...]`` (max over r).
    """
    if vis_mode != 'gate' or (vp is None and vg is None):
        return corr.amax(dim=2), corr.amax(dim=1)
    # 'gate': the other side's visibility gates which cells may win the max. Written
    # as corr * v + (v - 1) * (-FLOOR) so that v = 1 returns corr bit for bit.
    by_probe = corr if vg is None else torch.addcmul(
        (1 - vg) * _FLOOR, corr, vg)
    by_probe = by_probe.amax(dim=2)
    by_gallery = corr if vp is None else torch.addcmul(
        (1 - vp) * _FLOOR, corr, vp)
    return by_probe, by_gallery.amax(dim=1)


def _evidence_weights(vis: Optional[torch.Tensor], n: int, hw: int,
                      like: torch.Tensor) -> torch.Tensor:
    """``'gate'``: each cell's evidence weight, visibility / mean visibility [n, hw]."""
    if vis is None:
        return like.new_ones(n, hw, dtype=torch.float32)
    vis = vis.float()
    return vis / vis.mean(dim=-1, keepdim=True).clamp_min(1e-6)


def _score(pooled: torch.Tensor, weights: Optional[torch.Tensor],
           bn: nn.Module, fc: nn.Module, logit_bn: nn.Module) -> torch.Tensor:
    """BN -> shared FC -> sum of both directions -> logit BN, [..., 2, hw] -> [...]."""
    lead = pooled.shape[:-2]
    hw = pooled.shape[-1]
    x = bn(pooled.float().reshape(-1, 1, hw)).reshape(*lead, 2, hw)
    if weights is not None:
        x = x * weights
    x = fc(x).sum(dim=(-2, -1))
    return logit_bn(x.reshape(-1, 1).float()).reshape(lead)


def _half_dtype(device: torch.device) -> torch.dtype:
    # CPU kernels have no fast fp16 matmul; bf16 is the CPU half type (AMX/AVX512).
    return torch.float16 if device.type == 'cuda' else torch.bfloat16


def _needs_global_stats(*modules: nn.Module) -> bool:
    return any(m.training for m in modules)


def _cell_rows(maps: torch.Tensor, vis: Optional[torch.Tensor], vis_mode: str,
               half: bool) -> torch.Tensor:
    """Maps [n, C, hw] -> cell rows [n, hw, C] (contiguous), seed-weighted and cast.

    ``(vis_p[r] * probe[:, r]) . (vis_g[t] * gallery[:, t])`` is the seed's
    ``s[r, t] * vis_p[r] * vis_g[t]``: weighting the C*hw inputs replaces two passes
    over the hw*hw correlation values; a visibility of 1 leaves the maps bit for bit.
    In the row layout the weight broadcasts along the contiguous channels (a
    [n, C, hw] * [n, 1, hw] product is several times slower on CPU).
    """
    rows = maps.transpose(1, 2)
    if half:
        # Cast first: the transposing copy then moves half the bytes.
        rows = rows.to(_half_dtype(maps.device))
    rows = rows.contiguous()
    if vis_mode == 'multiply' and vis is not None:
        rows = rows * vis.to(rows.dtype).unsqueeze(-1)
    return rows


def _chunk_sizes(n_p: int, n_g: int, hw: int,
                 max_chunk_elems: int) -> Tuple[int, int]:
    budget = max(hw * hw, min(int(max_chunk_elems), _CHUNK_TARGET_ELEMS))
    pairs = max(1, budget // (hw * hw))
    gc = min(n_g, pairs, _GALLERY_CHUNK)
    pc = min(n_p, max(1, pairs // gc))
    return pc, gc


def qaconv_match(probe: torch.Tensor,
                 gallery: torch.Tensor,
                 bn: nn.Module,
                 fc: nn.Module,
                 logit_bn: nn.Module,
                 probe_vis: Optional[torch.Tensor] = None,
                 gallery_vis: Optional[torch.Tensor] = None,
                 vis_mode: str = 'multiply',
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
        vis_mode (str): ``'multiply'`` (old name ``'seed'``), ``'gate'`` or
            ``'none'`` (see module doc).
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
    vis_mode = canonical_vis_mode(vis_mode)
    probe = _flat_maps(probe, 'probe maps')
    gallery = _flat_maps(gallery, 'gallery maps')
    if probe.shape[1:] != gallery.shape[1:]:
        raise ConfigError(
            f'QAConv: probe maps {tuple(probe.shape)} and gallery maps '
            f'{tuple(gallery.shape)} differ in channels or cells')
    n_p, c, hw = probe.shape
    n_g = gallery.shape[0]
    vp = _flat_vis(probe_vis, n_p, hw, 'probe_vis')
    vg = _flat_vis(gallery_vis, n_g, hw, 'gallery_vis')
    gate = vis_mode == 'gate'
    if gate:
        wp = _evidence_weights(vp, n_p, hw, probe)
        wg = _evidence_weights(vg, n_g, hw, gallery)
    # Probe rows (p, r): every chunk of probes is a contiguous block of rows.
    p_rows = _cell_rows(probe, vp, vis_mode, half).view(n_p * hw, c)
    g_rows = _cell_rows(gallery, vg, vis_mode, half)
    pc, gc = _chunk_sizes(n_p, n_g, hw, max_chunk_elems)
    global_stats = _needs_global_stats(bn, logit_bn)
    cols, pooled_cols, weight_cols = [], [], []
    for g0 in range(0, n_g, gc):
        g1 = min(n_g, g0 + gc)
        n = g1 - g0
        # Gallery columns (t, g): the correlation comes out [p, r, t, g].
        g_cols = g_rows[g0:g1].transpose(0, 1).reshape(hw * n, c).t()
        vg_c = vg[g0:g1].t().reshape(1, 1, hw, n).to(p_rows.dtype) \
            if gate and vg is not None else None
        rows, pooled_rows, weight_rows = [], [], []
        for p0 in range(0, n_p, pc):
            p1 = min(n_p, p0 + pc)
            m = p1 - p0
            corr = torch.mm(p_rows[p0 * hw:p1 * hw], g_cols).view(m, hw, hw, n)
            vp_c = vp[p0:p1].reshape(m, hw, 1, 1).to(p_rows.dtype) \
                if gate and vp is not None else None
            by_probe, by_gallery = _pool(corr, vp_c, vg_c, vis_mode)
            del corr
            # [m, 2, hw, n] -> [m, n, 2, hw]: only 2*hw values per pair move.
            pooled = torch.stack((by_probe, by_gallery), dim=1).permute(0, 3, 1, 2)
            weights = torch.stack(
                (wp[p0:p1, None].expand(m, n, hw),
                 wg[None, g0:g1].expand(m, n, hw)), dim=2) if gate else None
            if global_stats:
                pooled_rows.append(pooled)
                weight_rows.append(weights)
            else:
                rows.append(_score(pooled, weights, bn, fc, logit_bn))
        if global_stats:
            pooled_cols.append(torch.cat(pooled_rows, dim=0))
            weight_cols.append(torch.cat(weight_rows, dim=0) if gate else None)
        else:
            cols.append(torch.cat(rows, dim=0))
    if global_stats:
        pooled = torch.cat(pooled_cols, dim=1)
        weights = torch.cat(weight_cols, dim=1) if gate else None
        return _score(pooled, weights, bn, fc, logit_bn)
    return torch.cat(cols, dim=1)


def qaconv_match_pairs(maps_a: torch.Tensor,
                       maps_b: torch.Tensor,
                       bn: nn.Module,
                       fc: nn.Module,
                       logit_bn: nn.Module,
                       vis_a: Optional[torch.Tensor] = None,
                       vis_b: Optional[torch.Tensor] = None,
                       vis_mode: str = 'multiply',
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
        vis_mode (str): ``'multiply'`` (old name ``'seed'``), ``'gate'`` or
            ``'none'``.
        max_chunk_elems (int): Most correlation values computed at once.
        half (bool): Correlate in half precision.

    Returns:
        Tensor: Scores [N] (fp32); equal to the diagonal of
        ``qaconv_match(maps_a, maps_b, ...)``.
    """
    vis_mode = canonical_vis_mode(vis_mode)
    a = _flat_maps(maps_a, 'maps_a')
    b = _flat_maps(maps_b, 'maps_b')
    if a.shape != b.shape:
        raise ConfigError(
            f'QAConv: pair maps must have equal shapes, got {tuple(a.shape)} '
            f'and {tuple(b.shape)}')
    n, _, hw = a.shape
    va = _flat_vis(vis_a, n, hw, 'vis_a')
    vb = _flat_vis(vis_b, n, hw, 'vis_b')
    gate = vis_mode == 'gate'
    if gate:
        weights_all = torch.stack((_evidence_weights(va, n, hw, a),
                                   _evidence_weights(vb, n, hw, b)), dim=1)
    a = _cell_rows(a, va, vis_mode, half)
    b = _cell_rows(b, vb, vis_mode, half).transpose(1, 2)
    nc = max(1, int(max_chunk_elems) // (hw * hw))
    global_stats = _needs_global_stats(bn, logit_bn)
    scores, pooled_all = [], []
    for i in range(0, n, nc):
        j = min(n, i + nc)
        corr = torch.bmm(a[i:j], b[i:j])
        vp_c = va[i:j, :, None].to(corr.dtype) if gate and va is not None \
            else None
        vg_c = vb[i:j, None, :].to(corr.dtype) if gate and vb is not None \
            else None
        pooled = torch.stack(_pool(corr, vp_c, vg_c, vis_mode), dim=1)
        del corr
        if global_stats:
            pooled_all.append(pooled)
        else:
            scores.append(_score(pooled, weights_all[i:j] if gate else None,
                                 bn, fc, logit_bn))
    if global_stats:
        return _score(torch.cat(pooled_all), weights_all if gate else None, bn,
                      fc, logit_bn)
    return torch.cat(scores)
