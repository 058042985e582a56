"""OcclusionHead: a visibility map predicted from backbone feature maps.

OAML's addition to AdaFace + QAConv (docs/models.md, "Occlusion head"): a small
two-layer conv head kept light (about 590K parameters at 512 channels) so that it does
not overfit the small occluded data set. It is trained on detached feature maps, so its
loss never reaches the backbone.

It is a *neck* in the MMPretrain sense: it sits between the backbone and a head and
what it computes (the visibility grid) is the input the QAConv head weights its
correlations with, in training and at inference. Like a head, it owns its loss
(:meth:`OcclusionHead.loss`), since it is the only part trained on that target.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from oaml_mm.errors import ConfigError
from oaml_mm.registry import MODELS

__all__ = ['OcclusionHead']


@MODELS.register_module()
class OcclusionHead(BaseModule):
    """conv3x3(C->128, no bias) -> BN -> ReLU -> conv1x1(128->1) -> sigmoid.

    Examples::

        neck = dict(type='OcclusionHead', in_channels=512)
        neck = dict(type='OcclusionHead', in_channels=128, hidden_channels=32,
                    loss=dict(type='OcclusionMSELoss'))

    Args:
        in_channels (int): Channels of the feature maps. Defaults to 512.
        hidden_channels (int): Width of the hidden layer. Defaults to 128.
        loss (dict): Loss against the true visibility. Defaults to
            ``OcclusionMSELoss``.
        init_cfg (dict, optional): mmengine initialisation config.

    Returns (forward):
        Tensor: Visibility [B, 1, h, w] in [0, 1] (1 = visible).
    """

    #: The input this neck reads: the backbone's (detached) feature maps.
    reads = 'maps'

    def __init__(self,
                 in_channels: int = 512,
                 hidden_channels: int = 128,
                 loss: dict = dict(type='OcclusionMSELoss'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if in_channels <= 0 or hidden_channels <= 0:
            raise ConfigError(
                'OcclusionHead: in_channels and hidden_channels must be positive,'
                f' got {in_channels}, {hidden_channels}')
        self.in_channels = in_channels
        self.conv = nn.Conv2d(in_channels, hidden_channels, 3, padding=1,
                              bias=False)
        self.bn = nn.BatchNorm2d(hidden_channels)
        self.relu = nn.ReLU(inplace=True)
        self.out = nn.Conv2d(hidden_channels, 1, 1)
        self.loss_module = MODELS.build(loss)

    def forward(self, feat_maps: torch.Tensor) -> torch.Tensor:
        """Predict visibility.

        Args:
            feat_maps (Tensor): [B, C, h, w] (the recognizer passes them detached).

        Returns:
            Tensor: [B, 1, h, w] in [0, 1].
        """
        if feat_maps.dim() != 4 or feat_maps.shape[1] != self.in_channels:
            raise ConfigError(
                f'OcclusionHead: expected maps [B, {self.in_channels}, h, w], got '
                f'{tuple(feat_maps.shape)}; set in_channels to the backbone width')
        x = self.relu(self.bn(self.conv(feat_maps)))
        return torch.sigmoid(self.out(x))

    def loss(self, batches: Sequence[torch.Tensor],
             targets: Sequence[Optional[torch.Tensor]]
             ) -> Tuple[List[torch.Tensor], Dict[str, torch.Tensor]]:
        """Predict visibility for several batches at once and score the labelled ones.

        All batches go through one forward, so the BatchNorm sees their union (the
        main batch and the occlusion stream in OAML training).

        Args:
            batches (Sequence[Tensor]): ``[B_i, C, h, w]`` maps each (detached).
            targets (Sequence[Tensor | None]): True visibility per batch
                (``[B_i, 1, H, W]``, any grid the loss can resize), None for a batch
                without one.

        Returns:
            tuple: The detached predictions ``[B_i, 1, h, w]`` per batch, and
            ``{'loss': scalar}`` over the labelled batches (an empty dict if none).
        """
        pred = self(torch.cat(list(batches)))
        preds = pred.split([b.shape[0] for b in batches])
        labelled = [(p, t) for p, t in zip(preds, targets) if t is not None]
        losses: Dict[str, torch.Tensor] = {}
        if labelled:
            losses['loss'] = self.loss_module(
                torch.cat([p for p, _ in labelled]),
                torch.cat([t.to(pred.device) for _, t in labelled]))
        return [p.detach() for p in preds], losses
