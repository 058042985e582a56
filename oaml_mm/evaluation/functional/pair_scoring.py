"""Scoring only the listed pairs, in chunks.

IJB-C lists 15.7M pairs among 23,124 templates. The QAConv reference evaluator scores
every probe template against every gallery template in 128 x 128 blocks and then picks
the listed pairs; gathering the two templates of each listed pair and scoring them
row-wise does only the work that is needed (see ``benchmarks/bench_ijbc_scale.py``).
"""
from typing import Callable, Optional

import torch
import torch.nn.functional as F

__all__ = ['cosine_pairs', 'match_listed_pairs', 'match_all_then_pick']

PairMatcher = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                       torch.Tensor]


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
