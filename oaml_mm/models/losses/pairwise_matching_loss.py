"""QAConv's pairwise matching loss on the in-batch score matrix.

Liao & Shao, "Graph Sampling Based Deep Metric Learning for Generalizable Person
Re-Identification", CVPR 2022 (QAConv v2): every in-batch pair is a binary
same/different decision, ``BCEWithLogits(score[i, j], y_i == y_j)``, summed over the
gallery and averaged over the probes (the public code's reduction).
"""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from oaml_mm.registry import MODELS
from ..functional.pair_mining import hardest_pairs

__all__ = ['PairwiseMatchingLoss', 'ranking_accuracy']


def ranking_accuracy(scores: torch.Tensor,
                     labels: torch.Tensor) -> torch.Tensor:
    """Share of probes whose hardest positive outscores their hardest negative.

    Rows without a positive (other than the image itself) or without a negative are
    left out; 0 if no row qualifies.

    Args:
        scores (Tensor): [B, B] similarities.
        labels (Tensor): [B] identities.

    Returns:
        Tensor: Scalar accuracy in [0, 1].
    """
    with torch.no_grad():
        min_pos, max_neg, valid = hardest_pairs(scores.float(), labels)
        if not bool(valid.any()):
            return scores.new_zeros((), dtype=torch.float32)
        return (min_pos[valid] > max_neg[valid]).float().mean()


@MODELS.register_module()
class PairwiseMatchingLoss(nn.Module):
    """Binary cross-entropy over all in-batch pairs.

    Example::

        losses = dict(pairwise=dict(type='PairwiseMatchingLoss', loss_weight=1.0))

    Args:
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self,
                scores: torch.Tensor,
                labels: torch.Tensor,
                **kwargs) -> Tuple[torch.Tensor, torch.Tensor]:
        """Loss and ranking accuracy.

        Args:
            scores (Tensor): In-batch QAConv scores [B, B] (logits).
            labels (Tensor): Identities [B].
            **kwargs: Ignored (other QAConv losses take maps and a matcher).

        Returns:
            tuple[Tensor, Tensor]: weighted loss, accuracy.
        """
        labels = labels.view(-1)
        target = (labels.view(-1, 1) == labels.view(1, -1)).float()
        loss = F.binary_cross_entropy_with_logits(
            scores.float(), target, reduction='none').sum(dim=1).mean()
        return self.loss_weight * loss, ranking_accuracy(scores, labels)
