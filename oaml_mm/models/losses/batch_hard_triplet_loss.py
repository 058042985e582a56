"""Batch-hard triplet loss on the in-batch QAConv score matrix.

Hermans, Beyer & Leibe, "In Defense of the Triplet Loss for Person Re-Identification",
2017: per probe, the lowest-scored positive must beat the highest-scored negative by a
margin: ``relu(margin - (min_pos - max_neg))``. QAConv's public code uses margin 16 on
its scores; the OAML seed's softmax-triplet uses 1.0.
"""
from typing import Tuple

import torch
import torch.nn as nn

from oaml_mm.registry import MODELS
from ..functional.pair_mining import hardest_pairs

__all__ = ['BatchHardTripletLoss', 'batch_hard_triplet']


def batch_hard_triplet(scores: torch.Tensor, labels: torch.Tensor,
                       margin: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Batch-hard margin ranking loss and its accuracy.

    Args:
        scores (Tensor): [B, B] similarities.
        labels (Tensor): [B] identities.
        margin (float): Required gap between hardest positive and negative.

    Returns:
        tuple[Tensor, Tensor]: mean loss over rows that have a positive and a
        negative (0 with a gradient path if none), and the share of those rows with
        ``min_pos >= max_neg``.
    """
    min_pos, max_neg, valid = hardest_pairs(scores.float(), labels.view(-1))
    if not bool(valid.any()):
        zero = scores.sum() * 0.0
        return zero, zero.detach()
    gap = min_pos[valid] - max_neg[valid]
    loss = torch.relu(margin - gap).mean()
    return loss, (gap >= 0).float().mean().detach()


@MODELS.register_module()
class BatchHardTripletLoss(nn.Module):
    """Batch-hard triplet loss on QAConv scores.

    Example::

        losses = dict(triplet=dict(type='BatchHardTripletLoss', margin=16.0,
                                   loss_weight=0.5))

    Args:
        margin (float): Margin. Defaults to 16.0 (QAConv's public code).
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, margin: float = 16.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.margin = margin
        self.loss_weight = loss_weight

    def forward(self, scores: torch.Tensor, labels: torch.Tensor,
                **kwargs) -> Tuple[torch.Tensor, torch.Tensor]:
        """Weighted loss and accuracy (``kwargs`` are ignored)."""
        loss, acc = batch_hard_triplet(scores, labels, self.margin)
        return self.loss_weight * loss, acc
