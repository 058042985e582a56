"""Cosine scores of listed pairs: whole template-by-template product, then a gather.

IJB-C's 1:1 list (15.7M pairs between 3,531 enrolment and 19,593 verification
templates) fills ~22% of the template grid, so the full product of the distinct
first-side templates with the distinct second-side ones, taken in a few large matrix
products, costs little more than the products alone; picking the listed entries is one
gather. Issue 17 (item 2) names this the baseline to beat or to adopt. On the
project's shared 2-core CPU it scored the IJB-C-shaped lists at 0.72-1.32x the tiled
scorer (:func:`~oaml_mm.evaluation.functional.pair_scoring.cosine_pairs_tiled`) over
four runs, with the same scores to float32 rounding (``docs/benchmarks.md``, "4.
IJB-C scale").
"""
from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ['cosine_pairs_dense']


def _ranks(idx: torch.Tensor, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Distinct values of ``idx`` (sorted) and each entry's position among them."""
    # bincount + cumsum: one pass over the pairs, no sort of the 15.7M entries.
    present = torch.bincount(idx, minlength=n) > 0
    rank = torch.cumsum(present, 0) - 1
    return present.nonzero().squeeze(1), rank.index_select(0, idx)


def cosine_pairs_dense(embeddings: torch.Tensor,
                       idx_a: torch.Tensor,
                       idx_b: torch.Tensor,
                       max_elems: int = 1 << 27) -> torch.Tensor:
    """Cosine of each listed pair through dense blocks of whole rows.

    The distinct first-side templates are taken in row blocks of
    ``max_elems // n_b`` rows (``n_b``: distinct second-side templates); each block's
    product with every second-side template is computed once and the listed pairs
    of those rows are gathered from it (one comparison pass over the pairs per
    block, so keep the blocks few: the default budget takes IJB-C in one).

    Args:
        embeddings (torch.Tensor): ``[T, D]`` template embeddings (normalised here).
        idx_a (torch.Tensor): ``[N]`` int rows of the first templates.
        idx_b (torch.Tensor): ``[N]`` int rows of the second templates.
        max_elems (int): Most product values held at once (fp32: 4 bytes each;
            the default 2**27 is 512 MiB). IJB-C's grid (69M values) then takes
            one block; two blocks measured 1.3x slower there.

    Returns:
        torch.Tensor: ``[N]`` float32 scores on the embeddings' device, list order.

    Raises:
        ValueError: ``idx_a`` and ``idx_b`` differ in length, or an index is
            outside ``[0, T)``.

    Examples:
        >>> e = torch.tensor([[1., 0], [0, 2], [1, 1]])
        >>> cosine_pairs_dense(e, torch.tensor([0, 0]), torch.tensor([1, 2]))
        tensor([0.0000, 0.7071])
    """
    idx_a = idx_a.reshape(-1).long().to(embeddings.device)
    idx_b = idx_b.reshape(-1).long().to(embeddings.device)
    n_t = embeddings.shape[0]
    if idx_a.numel() != idx_b.numel():
        raise ValueError(f'cosine_pairs_dense: {idx_a.numel()} first and '
                         f'{idx_b.numel()} second indices')
    if idx_a.numel() == 0:
        return embeddings.new_empty(0, dtype=torch.float32)
    for name, idx in (('idx_a', idx_a), ('idx_b', idx_b)):
        if int(idx.min()) < 0 or int(idx.max()) >= n_t:
            raise ValueError(f'cosine_pairs_dense: {name} holds rows outside '
                             f'[0, {n_t}) (range {int(idx.min())}..{int(idx.max())})')
    e = F.normalize(embeddings.float(), dim=1)
    ua, ia = _ranks(idx_a, n_t)
    ub, ib = _ranks(idx_b, n_t)
    eb = e[ub].t().contiguous()
    rows = max(1, int(max_elems) // ub.numel())
    if rows >= ua.numel():
        return (e[ua] @ eb)[ia, ib]
    # Few blocks (the usual case): one comparison pass over the pairs per block is
    # cheaper than sorting them by block.
    n_blocks = -(-ua.numel() // rows)
    out = torch.empty(idx_a.numel(), dtype=torch.float32, device=e.device)
    for k in range(n_blocks):
        lo = k * rows
        sel = ((ia >= lo) & (ia < lo + rows)).nonzero().squeeze(1)
        if sel.numel() == 0:
            continue
        scores = e[ua[lo:lo + rows]] @ eb
        out[sel] = scores[ia[sel] - lo, ib[sel]]
    return out
