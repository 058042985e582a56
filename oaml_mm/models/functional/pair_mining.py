"""Hardest positive / hardest negative mining on an in-batch score matrix.

Shared by the pairwise-matching accuracy, the batch-hard triplet loss (Hermans et al.,
"In Defense of the Triplet Loss for Person Re-Identification", 2017) and the seed's
softmax-triplet loss. Scores are similarities (higher = same identity); the diagonal
(an image with itself) is never a positive.
"""
from typing import Tuple

import torch

__all__ = ['hardest_pairs']


def hardest_pairs(
        scores: torch.Tensor,
        labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lowest-scored positive and highest-scored negative of each row.

    Args:
        scores (Tensor): Square similarity matrix [B, B] (row i = probe i).
        labels (Tensor): Identities [B].

    Returns:
        tuple[Tensor, Tensor, Tensor]: ``min_pos`` [B], ``max_neg`` [B] (gradients
        flow into the selected entries) and ``valid`` [B] bool, true where the row
        has at least one positive other than itself and at least one negative.

    Examples:
        >>> s = torch.tensor([[9., 5., 1.], [5., 9., 2.], [1., 2., 9.]])
        >>> hardest_pairs(s, torch.tensor([0, 0, 1]))[:2]
        (tensor([5., 5., inf]), tensor([1., 2., 2.]))
    """
    same = labels.view(-1, 1) == labels.view(1, -1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=scores.device)
    pos = same & ~eye
    neg = ~same
    inf = torch.tensor(float('inf'), dtype=scores.dtype, device=scores.device)
    min_pos = torch.where(pos, scores, inf).min(dim=1).values
    max_neg = torch.where(neg, scores, -inf).max(dim=1).values
    valid = pos.any(dim=1) & neg.any(dim=1)
    return min_pos, max_neg, valid
