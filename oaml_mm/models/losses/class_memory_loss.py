"""The OAML seed's "softmax-triplet" loss: QAConv against a learned class memory.

The seed (technical report, section 3.3.3) adds to the triplet term a classification
term: each image's feature map is matched by QAConv against one learned feature map per
identity, and the scores are the logits of a cross-entropy. The triplet term uses margin
1.0 and weight 0.5 there. It needs a memory of ``num_classes x C x h x w`` values, so it
suits small identity counts (the per-step cost is B x num_classes correlations).
"""
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from oaml_mm.errors import ConfigError
from oaml_mm.registry import MODELS
from .batch_hard_triplet_loss import batch_hard_triplet

__all__ = ['ClassMemorySoftmaxTripletLoss']


@MODELS.register_module()
class ClassMemorySoftmaxTripletLoss(nn.Module):
    """Cross-entropy over QAConv scores against a class memory, plus batch-hard triplet.

    Example::

        losses = dict(memory=dict(type='ClassMemorySoftmaxTripletLoss',
                                  num_classes=400, in_channels=128))

    Args:
        num_classes (int): Number of identities.
        in_channels (int): Channels of the feature maps.
        feat_size (int): Side of the feature maps. Defaults to 7.
        triplet_margin (float): Margin of the triplet term. Defaults to 1.0.
        triplet_weight (float): Weight of the triplet term. Defaults to 0.5.
        loss_weight (float): Multiplier of the whole loss. Defaults to 1.0.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 feat_size: int = 7,
                 triplet_margin: float = 1.0,
                 triplet_weight: float = 0.5,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if num_classes <= 0 or in_channels <= 0:
            raise ConfigError(
                'ClassMemorySoftmaxTripletLoss: num_classes and in_channels '
                f'must be positive, got {num_classes}, {in_channels}')
        self.num_classes = num_classes
        self.memory = nn.Parameter(
            torch.randn(num_classes, in_channels, feat_size, feat_size))
        self.triplet_margin = triplet_margin
        self.triplet_weight = triplet_weight
        self.loss_weight = loss_weight

    def forward(self,
                scores: torch.Tensor,
                labels: torch.Tensor,
                maps: Optional[torch.Tensor] = None,
                vis: Optional[torch.Tensor] = None,
                matcher: Optional[Callable[..., torch.Tensor]] = None,
                **kwargs) -> Tuple[torch.Tensor, torch.Tensor]:
        """Weighted loss and classification accuracy against the memory.

        Args:
            scores (Tensor): In-batch scores [B, B] for the triplet term.
            labels (Tensor): Identities [B].
            maps (Tensor): Normalised feature maps [B, C, h, w].
            vis (Tensor, optional): Their visibility [B, 1, h, w].
            matcher (callable): ``matcher(probe, gallery, probe_vis, gallery_vis)``
                -> [P, G], e.g. the QAConv head's matcher.

        Returns:
            tuple[Tensor, Tensor]: weighted loss, accuracy.
        """
        if maps is None or matcher is None:
            raise ConfigError(
                'ClassMemorySoftmaxTripletLoss needs the feature maps and a '
                'matcher; use it inside QAConvHead.losses')
        labels = labels.view(-1).long()
        memory = F.normalize(self.memory, dim=1)
        logits = matcher(maps, memory, vis, None)
        ce = F.cross_entropy(logits.float(), labels)
        tri, _ = batch_hard_triplet(scores, labels, self.triplet_margin)
        with torch.no_grad():
            acc = (logits.argmax(dim=1) == labels).float().mean()
        return self.loss_weight * (ce + self.triplet_weight * tri), acc
