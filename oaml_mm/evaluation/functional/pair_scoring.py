"""Scoring only the listed pairs, in chunks or in tiles.

IJB-C lists 15.7M pairs among 23,124 templates. The QAConv reference evaluator scores
every probe template against every gallery template in 128 x 128 blocks and then picks
the listed pairs. Gathering the two templates of each listed pair and scoring them
row-wise (:func:`cosine_pairs`, :func:`match_listed_pairs`) does only the needed pairs
but as many tiny products that re-read each template for every pair, far from matrix
product speed.

:func:`score_pairs_tiled` is the block-sparse middle way (the tiling used by
block-sparse matrix products): pairs are grouped by (row tile of the first template,
column tile of the second) over the templates that occur in the list; a tile whose
listed pairs fill enough of its ``distinct rows x distinct columns`` grid is scored
densely with the fast ``[P, G]`` matcher and the listed entries are picked, the
others are scored row-wise. The rule is a cost model (dense ~ P*G, row-wise ~
n / ``min_fill``), so the work never exceeds all-blocks-then-pick over the same
templates. Figures: ``benchmarks/bench_ijbc_scale.py``, ``docs/evaluation.md``.
"""
import bisect
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from oaml_mm.errors import ConfigError

__all__ = [
    'cosine_pairs', 'match_listed_pairs', 'match_all_then_pick', 'tile_pair_order',
    'score_pairs_tiled', 'cosine_pairs_tiled', 'PairPlan', 'plan_pair_units',
    'split_units', 'score_units', 'dot_all', 'dot_rows', 'DEFAULT_TILE', 'COSINE_TILE',
    'COSINE_MIN_FILL', 'QACONV_MIN_FILL'
]

PairMatcher = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                       torch.Tensor]

#: Templates per tile side for QAConv (measured, see docs/evaluation.md): dense
#: QAConv is near its peak rate from 128-256 on, and smaller tiles skip more of a
#: structured pair list.
DEFAULT_TILE = 256
#: Cosine tiles: a 512-d dot product is so cheap that per-tile bookkeeping
#: dominates below ~1024 (15.7M IJB-C pairs: 3.4 s at 256, 2.6 s at 1024).
COSINE_TILE = 1024
#: Fill (listed pairs / (distinct rows x distinct columns)) from which a tile is
#: cheaper to score densely: the ratio of dense to row-wise cost per pair, measured
#: with ``benchmarks/bench_ijbc_scale.py`` (CPU, 512-d / 512x7x7).
#: (cosine: dense 1e8 vs row-wise 1.4e5 pairs/s; QAConv: dense 1.3e4-3.3e4 for
#: 4x4-256x256 tiles vs row-wise 1.1e3 pairs/s, so 0.05 errs towards row-wise).
COSINE_MIN_FILL = 0.002
QACONV_MIN_FILL = 0.05


def cosine_pairs(embeddings: torch.Tensor,
                 idx_a: torch.Tensor,
                 idx_b: torch.Tensor,
                 chunk: int = 1 << 16) -> torch.Tensor:
    """Cosine similarity of the rows ``idx_a[i]`` and ``idx_b[i]`` of ``embeddings``.

    Args:
        embeddings (torch.Tensor): ``[T, D]`` (normalised here).
        idx_a (torch.Tensor): ``[N]`` row of the first template of each pair.
        idx_b (torch.Tensor): ``[N]`` row of the second one.
        chunk (int): Pairs per step (bounds the gathered ``[chunk, D]`` copies).

    Returns:
        torch.Tensor: ``[N]`` float32 scores.

    Examples:
        >>> e = torch.tensor([[1., 0], [0, 2], [1, 1]])
        >>> cosine_pairs(e, torch.tensor([0, 0]), torch.tensor([1, 2])).tolist()
        [0.0, 0.7071067690849304]
    """
    e = F.normalize(embeddings.float(), dim=1)
    out = torch.empty(idx_a.numel(), dtype=torch.float32)
    for s in range(0, idx_a.numel(), chunk):
        a = e[idx_a[s:s + chunk]]
        b = e[idx_b[s:s + chunk]]
        out[s:s + chunk] = (a * b).sum(1).cpu()
    return out


def match_listed_pairs(matcher: PairMatcher,
                       maps: torch.Tensor,
                       vis: Optional[torch.Tensor],
                       idx_a: torch.Tensor,
                       idx_b: torch.Tensor,
                       chunk: int = 1024,
                       device: Optional[torch.device] = None,
                       progress: Optional[Callable[[int], None]] = None
                       ) -> torch.Tensor:
    """Score pairs ``(idx_a[i], idx_b[i])`` with a row-wise matcher, chunk by chunk.

    Args:
        matcher (callable): ``matcher(maps_a, maps_b, vis_a, vis_b) -> [n]``, e.g.
            ``OAMLRecognizer.match_pairs``.
        maps (torch.Tensor): ``[T, C, h, w]`` template maps (fp16 storage is fine;
            each chunk is cast to float32 on ``device``).
        vis (torch.Tensor, optional): ``[T, 1, h, w]`` template visibility.
        idx_a (torch.Tensor): ``[N]`` rows of the first templates.
        idx_b (torch.Tensor): ``[N]`` rows of the second templates.
        chunk (int): Pairs per matcher call. Defaults to 1024.
        device (torch.device, optional): Where to match. Defaults to the maps' one.
        progress (callable, optional): Called with the number of pairs done per
            chunk (e.g. ``tqdm.update``).

    Returns:
        torch.Tensor: ``[N]`` float32 scores on the CPU.
    """
    device = device or maps.device
    out = torch.empty(idx_a.numel(), dtype=torch.float32)
    for s in range(0, idx_a.numel(), chunk):
        ia, ib = idx_a[s:s + chunk], idx_b[s:s + chunk]
        ma = maps[ia].to(device=device, dtype=torch.float32)
        mb = maps[ib].to(device=device, dtype=torch.float32)
        va = vb = None
        if vis is not None:
            va = vis[ia].to(device=device, dtype=torch.float32)
            vb = vis[ib].to(device=device, dtype=torch.float32)
        out[s:s + ia.numel()] = matcher(ma, mb, va, vb).reshape(-1).float().cpu()
        if progress is not None:
            progress(ia.numel())
    return out


def match_all_then_pick(matcher: Callable[..., torch.Tensor],
                        maps: torch.Tensor,
                        vis: Optional[torch.Tensor],
                        probe_rows: torch.Tensor,
                        gallery_rows: torch.Tensor,
                        idx_a: torch.Tensor,
                        idx_b: torch.Tensor,
                        block: int = 128,
                        device: Optional[torch.device] = None,
                        max_blocks: Optional[int] = None):
    """The straightforward evaluator: every probe x gallery block, then pick pairs.

    Used as the baseline of the scale benchmark and for 1:N score matrices.

    Args:
        matcher (callable): ``matcher(probe_maps, gallery_maps, probe_vis,
            gallery_vis) -> [P, G]``, e.g. ``QAConvHead.match``.
        maps (torch.Tensor): ``[T, C, h, w]`` template maps.
        vis (torch.Tensor, optional): ``[T, 1, h, w]`` template visibility.
        probe_rows (torch.Tensor): ``[P]`` rows of the probe templates.
        gallery_rows (torch.Tensor): ``[G]`` rows of the gallery templates.
        idx_a (torch.Tensor): ``[N]`` listed pairs' probe rows (may be empty).
        idx_b (torch.Tensor): ``[N]`` listed pairs' gallery rows.
        block (int): Block side. Defaults to 128 (the QAConv reference).
        device (torch.device, optional): Where to match.
        max_blocks (int, optional): Stop after this many blocks (for timing a sample).

    Returns:
        tuple: ``(full [P, G] float32 scores, picked [N] scores, blocks_done)``;
        blocks not computed (``max_blocks``) hold NaN.
    """
    device = device or maps.device
    p_n, g_n = probe_rows.numel(), gallery_rows.numel()
    full = torch.full((p_n, g_n), float('nan'))
    done = 0
    for ps in range(0, p_n, block):
        pr = probe_rows[ps:ps + block]
        pm = maps[pr].to(device=device, dtype=torch.float32)
        pv = None if vis is None else vis[pr].to(device, torch.float32)
        for gs in range(0, g_n, block):
            if max_blocks is not None and done >= max_blocks:
                break
            gr = gallery_rows[gs:gs + block]
            gm = maps[gr].to(device=device, dtype=torch.float32)
            gv = None if vis is None else vis[gr].to(device, torch.float32)
            full[ps:ps + pr.numel(), gs:gs + gr.numel()] = \
                matcher(pm, gm, pv, gv).float().cpu()
            done += 1
    # Position of each template row inside the probe / gallery lists.
    num_rows = int(maps.shape[0])
    p_pos = torch.full((num_rows, ), -1, dtype=torch.int64)
    p_pos[probe_rows] = torch.arange(p_n)
    g_pos = torch.full((num_rows, ), -1, dtype=torch.int64)
    g_pos[gallery_rows] = torch.arange(g_n)
    picked = full[p_pos[idx_a], g_pos[idx_b]] if idx_a.numel() else \
        torch.empty(0)
    return full, picked, done


def _compact(idx: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Rank of each value among the distinct values of ``idx`` and those values.

    O(N + max) with a presence mask instead of a sort (template rows are small
    integers; this runs on IJB-C's 15.7M pairs), int32 to halve memory traffic.
    """
    present = np.zeros(int(idx.max()) + 1, dtype=bool)
    present[idx] = True
    rank = np.cumsum(present, dtype=np.int32) - 1
    return rank[idx], np.flatnonzero(present)


def _tile_layout(idx_a: torch.Tensor, idx_b: torch.Tensor, tile: int):
    """Tile order, tile ids, compact ranks and distinct rows of both sides."""
    if tile < 1:
        raise ConfigError(f'tile must be >= 1, got {tile}')
    ca, ua = _compact(idx_a.numpy())
    cb, ub = _compact(idx_b.numpy())
    rows = (ua.size + tile - 1) // tile
    cols = (ub.size + tile - 1) // tile
    tile_id = (ca // tile).astype(np.int64) * cols + cb // tile
    if rows * cols <= 1 << 16:
        # numpy's stable sort of 16-bit integers is a radix sort: ~3x faster
        # than a comparison sort on 15.7M pairs.
        order = np.argsort(tile_id.astype(np.uint16), kind='stable')
    else:
        order = np.argsort(tile_id, kind='stable')
    t = torch.from_numpy
    return (t(order.astype(np.int64)), t(tile_id), t(ca), t(cb),
            t(ua.astype(np.int64)), t(ub.astype(np.int64)), cols)


def tile_pair_order(idx_a: torch.Tensor,
                    idx_b: torch.Tensor,
                    tile: int = DEFAULT_TILE) -> Tuple[torch.Tensor, torch.Tensor]:
    """Order that groups listed pairs by (row tile, column tile).

    Tiles are cut over the *distinct* templates of each side in row order (so
    templates that never occur on a side take no room in its tiles); inside a tile
    the pairs keep their list order (stable sort). The order is a pure function of
    the pair list, so every DDP rank computes the same one and can take a contiguous
    range of it.

    Args:
        idx_a (torch.Tensor): ``[N]`` rows of the first templates.
        idx_b (torch.Tensor): ``[N]`` rows of the second templates.
        tile (int): Distinct templates per tile side.

    Returns:
        tuple: ``(order [N], tile_id [N])`` int64; ``tile_id[order]`` is sorted.

    Examples:
        >>> a, b = torch.tensor([5, 0, 5, 0]), torch.tensor([9, 9, 7, 7])
        >>> order, tid = tile_pair_order(a, b, tile=1)
        >>> order.tolist(), tid.tolist()
        ([3, 1, 2, 0], [3, 1, 2, 0])
    """
    if tile < 1:
        raise ConfigError(f'tile must be >= 1, got {tile}')
    idx_a = idx_a.reshape(-1).long().cpu()
    idx_b = idx_b.reshape(-1).long().cpu()
    if idx_a.numel() == 0:
        empty = torch.empty(0, dtype=torch.int64)
        return empty, empty
    order, tile_id = _tile_layout(idx_a, idx_b, tile)[:2]
    return order, tile_id


def _gather(x: torch.Tensor, rows: torch.Tensor,
            device: torch.device) -> torch.Tensor:
    return x[rows].to(device=device, dtype=torch.float32)


def _local(global_rank: torch.Tensor, offset: int,
           tile: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Positions among the distinct ranks of one tile side and those ranks."""
    local = (global_rank - offset).long()
    present = torch.zeros(tile, dtype=torch.bool)
    present[local] = True
    return (present.cumsum(0) - 1)[local], present.nonzero().reshape(-1) + offset


class PairPlan(NamedTuple):
    """Canonical work units of a listed-pair scoring (see :func:`plan_pair_units`).

    Attributes:
        units (list): One ``(dense, tile_id, positions, tiles)`` per unit:
            ``positions`` are the list positions the unit scores (``[n]`` int64),
            ``tile_id`` the tile of a dense unit (-1 for a row-wise chunk) and
            ``tiles`` the number of tiles starting in the unit.
        cost (torch.Tensor): ``[U]`` float64 estimated pair evaluations per unit.
        ca, cb, ua, ub (torch.Tensor): Compact ranks and distinct rows of both sides.
        cols (int): Tiles per row of the tile grid.
        tile (int): Tile side.
    """
    units: List[Tuple[bool, int, torch.Tensor, int]]
    cost: torch.Tensor
    ca: torch.Tensor
    cb: torch.Tensor
    ua: torch.Tensor
    ub: torch.Tensor
    cols: int
    tile: int

    def positions(self, lo: int = 0, hi: Optional[int] = None) -> torch.Tensor:
        """``[n]`` list positions scored by the units ``lo:hi``, unit after unit."""
        chosen = self.units[lo:hi]
        if not chosen:
            return torch.empty(0, dtype=torch.int64)
        return torch.cat([u[2] for u in chosen])


def plan_pair_units(idx_a: torch.Tensor,
                    idx_b: torch.Tensor,
                    tile: int = DEFAULT_TILE,
                    min_fill: float = QACONV_MIN_FILL,
                    chunk: int = 4096) -> PairPlan:
    """Cut a pair list into canonical work units: dense tiles and row-wise chunks.

    Pairs are grouped with :func:`tile_pair_order`. For a tile with ``n`` listed
    pairs among ``P`` distinct first and ``G`` distinct second templates, the dense
    ``[P, G]`` score costs ~``P * G`` pair evaluations at matrix-product speed and
    row-wise scoring ~``n / min_fill`` of them; the cheaper is taken (dense when
    ``n >= min_fill * P * G``). Row-wise pairs of consecutive tiles are batched into
    chunks of about ``chunk`` pairs.

    The units are a pure function of the pair list and the three settings, and each
    unit's scores depend only on the unit. Every DDP rank therefore computes the
    same plan, scores a contiguous share of the units (:func:`split_units`) and
    gathers: a pair gets bit-identical scores whatever the world size.

    Args:
        idx_a (torch.Tensor): ``[N]`` rows of the first templates.
        idx_b (torch.Tensor): ``[N]`` rows of the second templates.
        tile (int): Distinct templates per tile side (>= 1).
        min_fill (float): Fill from which a tile is scored densely; 0 makes every
            tile dense, above 1 every tile row-wise.
        chunk (int): Row-wise pairs per unit (>= 1; the last chunk of a run of
            row-wise tiles may be shorter, one may be longer by at most a tile).

    Returns:
        PairPlan: The units in tile order.

    Raises:
        ConfigError: If ``tile`` or ``chunk`` is below 1.
    """
    if chunk < 1:
        raise ConfigError(f'pair chunk must be >= 1, got {chunk}')
    idx_a = idx_a.reshape(-1).long().cpu()
    idx_b = idx_b.reshape(-1).long().cpu()
    empty = torch.empty(0, dtype=torch.int64)
    if idx_a.numel() == 0:
        if tile < 1:
            raise ConfigError(f'tile must be >= 1, got {tile}')
        return PairPlan([], torch.empty(0, dtype=torch.float64), empty, empty,
                        empty, empty, 1, tile)
    order, tile_id, ca, cb, ua, ub, cols = _tile_layout(idx_a, idx_b, tile)
    counts = torch.bincount(tile_id, minlength=1)
    units: List[Tuple[bool, int, torch.Tensor, int]] = []
    cost: List[float] = []
    pending: List[torch.Tensor] = []
    pending_n = 0

    def flush() -> None:
        nonlocal pending, pending_n
        if pending:
            sel = torch.cat(pending)
            # Where each pending tile starts: a chunk counts the tiles starting in it.
            starts = np.cumsum([0] + [p.numel() for p in pending[:-1]])
            for s in range(0, sel.numel(), chunk):
                part = sel[s:s + chunk]
                n_tiles = int(((starts >= s) & (starts < s + chunk)).sum())
                units.append((False, -1, part, n_tiles))
                cost.append(part.numel() / max(min_fill, 1e-12))
        pending, pending_n = [], 0

    start = 0
    nonempty = counts.nonzero().reshape(-1)
    for t, n in zip(nonempty.tolist(), counts[nonempty].tolist()):
        sel = order[start:start + n]
        start += n
        grid = (_distinct(ca[sel], (t // cols) * tile, tile) *
                _distinct(cb[sel], (t % cols) * tile, tile))
        if n < min_fill * grid:
            pending.append(sel)
            pending_n += n
            if pending_n >= chunk:
                flush()
            continue
        units.append((True, t, sel, 1))
        cost.append(float(grid))
    flush()
    return PairPlan(units, torch.tensor(cost, dtype=torch.float64), ca, cb, ua,
                    ub, cols, tile)


def split_units(cost: torch.Tensor, world: int) -> List[Tuple[int, int]]:
    """Contiguous unit ranges of about equal cost, one per rank.

    Args:
        cost (torch.Tensor): ``[U]`` cost of each unit (:class:`PairPlan`).
        world (int): Number of ranks (>= 1).

    Returns:
        list: ``world`` ``(start, end)`` unit ranges covering ``0..U`` in order.

    Examples:
        >>> split_units(torch.tensor([1., 1, 1, 1]), 2)
        [(0, 2), (2, 4)]
    """
    u = cost.numel()
    if u == 0 or world == 1:
        return [(0, u)] + [(u, u)] * (world - 1)
    cum = torch.cumsum(cost.double(), 0).tolist()
    total = cum[-1]
    bounds = [0]
    for k in range(1, world):
        target = total * k / world
        i = bisect.bisect_left(cum, target)
        # Cut before or after the unit that crosses the target, whichever
        # lands closer to it.
        before = cum[i - 1] if i > 0 else 0.0
        cut = i if target - before <= cum[min(i, u - 1)] - target else i + 1
        bounds.append(min(max(cut, bounds[-1]), u))
    bounds.append(u)
    return [(bounds[i], bounds[i + 1]) for i in range(world)]


def score_units(plan: PairPlan,
                dense: PairMatcher,
                rowwise: PairMatcher,
                feats: torch.Tensor,
                vis: Optional[torch.Tensor],
                idx_a: torch.Tensor,
                idx_b: torch.Tensor,
                units: Optional[Tuple[int, int]] = None,
                device: Optional[torch.device] = None,
                progress: Optional[Callable[[int], None]] = None,
                stats: Optional[Dict[str, int]] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Score the units ``units[0]:units[1]`` of a plan.

    Args:
        plan (PairPlan): From :func:`plan_pair_units` on ``idx_a, idx_b``.
        dense, rowwise, feats, vis, device, progress: See
            :func:`score_pairs_tiled`.
        idx_a (torch.Tensor): ``[N]`` rows of the first templates.
        idx_b (torch.Tensor): ``[N]`` rows of the second templates.
        units (tuple, optional): ``(start, end)`` unit range; all when None.
        stats (dict, optional): Counters updated in place (see
            :func:`score_pairs_tiled`).

    Returns:
        tuple: ``(positions [n], scores [n])``: the list positions scored and their
        float32 scores (CPU), unit after unit.
    """
    device = device or feats.device
    idx_a = idx_a.reshape(-1).long().cpu()
    idx_b = idx_b.reshape(-1).long().cpu()
    lo, hi = units if units is not None else (0, len(plan.units))
    chosen = plan.units[lo:hi]
    if not chosen:
        return (torch.empty(0, dtype=torch.int64),
                torch.empty(0, dtype=torch.float32))
    st = stats if stats is not None else {}
    for k in ('dense_tiles', 'dense_scored', 'dense_pairs', 'rowwise_tiles',
              'rowwise_pairs'):
        st.setdefault(k, 0)
    positions = plan.positions(lo, hi)
    out = torch.empty(positions.numel(), dtype=torch.float32)
    at = 0
    tile = plan.tile
    for is_dense, t, sel, n_tiles in chosen:
        n = sel.numel()
        if is_dense:
            la, ra = _local(plan.ca[sel], (t // plan.cols) * tile, tile)
            lb, rb = _local(plan.cb[sel], (t % plan.cols) * tile, tile)
            rows_a, rows_b = plan.ua[ra], plan.ub[rb]
            va = vb = None
            if vis is not None:
                va = _gather(vis, rows_a, device)
                vb = _gather(vis, rows_b, device)
            full = dense(_gather(feats, rows_a, device),
                         _gather(feats, rows_b, device), va, vb)
            out[at:at + n] = full[la.to(full.device),
                                  lb.to(full.device)].float().cpu()
            st['dense_tiles'] += 1
            st['dense_scored'] += ra.numel() * rb.numel()
            st['dense_pairs'] += n
        else:
            ia, ib = idx_a[sel], idx_b[sel]
            va = vb = None
            if vis is not None:
                va, vb = _gather(vis, ia, device), _gather(vis, ib, device)
            out[at:at + n] = rowwise(_gather(feats, ia, device),
                                     _gather(feats, ib, device), va,
                                     vb).reshape(-1).float().cpu()
            st['rowwise_tiles'] += n_tiles
            st['rowwise_pairs'] += n
        at += n
        if progress is not None:
            progress(n)
    return positions, out


def _distinct(global_rank: torch.Tensor, offset: int, tile: int) -> int:
    """Number of distinct ranks of one tile side."""
    present = torch.zeros(tile, dtype=torch.bool)
    present[(global_rank - offset).long()] = True
    return int(present.sum())


def score_pairs_tiled(dense: PairMatcher,
                      rowwise: PairMatcher,
                      feats: torch.Tensor,
                      vis: Optional[torch.Tensor],
                      idx_a: torch.Tensor,
                      idx_b: torch.Tensor,
                      tile: int = DEFAULT_TILE,
                      min_fill: float = QACONV_MIN_FILL,
                      chunk: int = 4096,
                      device: Optional[torch.device] = None,
                      progress: Optional[Callable[[int], None]] = None,
                      stats: Optional[Dict[str, int]] = None) -> torch.Tensor:
    """Score listed pairs tile by tile: dense where the tile is full enough.

    The pairs are cut into canonical units with :func:`plan_pair_units` (dense
    tiles, row-wise chunks) and every unit is scored with :func:`score_units`.
    Dense work is at most ``tile**2`` per tile and never exceeds scoring every
    distinct first x second template, so this is never more work than
    all-blocks-then-pick.

    The two matchers must give the same score for the same pair (true for
    ``QAConvHead.match`` / ``match_pairs`` in eval mode, where the BatchNorms use
    running statistics; in training mode batch statistics couple the pairs).

    Args:
        dense (callable): ``dense(feats_a [P, ...], feats_b [G, ...], vis_a, vis_b)
            -> [P, G]``, e.g. ``OAMLRecognizer.match``.
        rowwise (callable): ``rowwise(feats_a [n, ...], feats_b [n, ...], vis_a,
            vis_b) -> [n]``, e.g. ``OAMLRecognizer.match_pairs``.
        feats (torch.Tensor): ``[T, ...]`` template features (maps or embeddings;
            fp16 storage is fine, every gathered block is cast to float32).
        vis (torch.Tensor, optional): ``[T, ...]`` template visibility (None is
            passed on as None).
        idx_a (torch.Tensor): ``[N]`` rows of the first templates.
        idx_b (torch.Tensor): ``[N]`` rows of the second templates.
        tile (int): Distinct templates per tile side. Defaults to 256.
        min_fill (float): Fill from which a tile is scored densely (the measured
            ratio of dense to row-wise cost per pair, 0.05 for QAConv); 0 makes
            every tile dense, above 1 every tile row-wise.
        chunk (int): Pairs per row-wise call (bounds its gathered copies).
        device (torch.device, optional): Where to score. Defaults to ``feats``'.
        progress (callable, optional): Called with the number of pairs done after
            each dense tile and each row-wise call (e.g. ``tqdm.update``).
        stats (dict, optional): Filled with ``dense_tiles``, ``dense_scored``
            (pair evaluations of the dense tiles), ``dense_pairs``,
            ``rowwise_tiles`` and ``rowwise_pairs``.

    Returns:
        torch.Tensor: ``[N]`` float32 scores on the CPU, in list order.

    Raises:
        ConfigError: If ``tile`` or ``chunk`` is below 1.

    Examples:
        >>> e = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
        >>> a, b = torch.tensor([0, 1, 2, 0]), torch.tensor([3, 4, 5, 5])
        >>> s = score_pairs_tiled(lambda x, y, *_: x @ y.T,
        ...                       lambda x, y, *_: (x * y).sum(1), e, None, a, b)
        >>> torch.allclose(s, (e[a] * e[b]).sum(1))
        True
    """
    plan = plan_pair_units(idx_a, idx_b, tile, min_fill, chunk)
    st = dict(dense_tiles=0, dense_scored=0, dense_pairs=0, rowwise_tiles=0,
              rowwise_pairs=0)
    pos, scores = score_units(plan, dense, rowwise, feats, vis, idx_a, idx_b,
                              device=device, progress=progress, stats=st)
    out = torch.empty(idx_a.numel(), dtype=torch.float32)
    out[pos] = scores
    if stats is not None:
        stats.update(st)
    return out


def dot_rows(a: torch.Tensor, b: torch.Tensor, *_) -> torch.Tensor:
    """Row-wise dot products ``[n]`` of ``[n, D]`` inputs (the row-wise cosine
    matcher for unit embeddings)."""
    return (a * b).sum(1)


def dot_all(a: torch.Tensor, b: torch.Tensor, *_) -> torch.Tensor:
    """All dot products ``[P, G]`` of ``[P, D]`` and ``[G, D]`` inputs (the dense
    cosine matcher for unit embeddings)."""
    return a @ b.T


def cosine_pairs_tiled(embeddings: torch.Tensor,
                       idx_a: torch.Tensor,
                       idx_b: torch.Tensor,
                       tile: int = COSINE_TILE,
                       min_fill: float = COSINE_MIN_FILL,
                       chunk: int = 1 << 16,
                       stats: Optional[Dict[str, int]] = None) -> torch.Tensor:
    """:func:`cosine_pairs` through :func:`score_pairs_tiled` (same scores).

    Args:
        embeddings (torch.Tensor): ``[T, D]`` (normalised here).
        idx_a (torch.Tensor): ``[N]`` rows of the first templates.
        idx_b (torch.Tensor): ``[N]`` rows of the second templates.
        tile (int): Distinct templates per tile side. Defaults to 1024.
        min_fill (float): See :func:`score_pairs_tiled`. Defaults to 0.002.
        chunk (int): Pairs per row-wise step.
        stats (dict, optional): See :func:`score_pairs_tiled`.

    Returns:
        torch.Tensor: ``[N]`` float32 scores.

    Examples:
        >>> e = torch.tensor([[1., 0], [0, 2], [1, 1]])
        >>> cosine_pairs_tiled(e, torch.tensor([0, 0]), torch.tensor([1, 2]))
        tensor([0.0000, 0.7071])
    """
    e = F.normalize(embeddings.float(), dim=1)
    return score_pairs_tiled(dot_all, dot_rows, e, None, idx_a, idx_b, tile,
                             min_fill, chunk, stats=stats)
