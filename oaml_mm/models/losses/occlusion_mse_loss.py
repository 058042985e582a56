"""MSE between a predicted visibility map and the ground-truth mask (OAML seed 3.3.4).

The ground truth may come at image resolution or already at the map resolution; it is
brought onto the prediction's grid
(:func:`~oaml_mm.models.functional.resize_visibility`: area average down), so each
cell's target is the visible fraction of the pixels it covers.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from oaml_mm.registry import MODELS
from ..functional.visibility import resize_visibility

__all__ = ['OcclusionMSELoss']


@MODELS.register_module()
class OcclusionMSELoss(nn.Module):
    """Mean squared error of the visibility map.

    Example::

        loss_occlusion = dict(type='OcclusionMSELoss', loss_weight=1.0)

    Args:
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, pred: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
        """Weighted MSE.

        Args:
            pred (Tensor): Predicted visibility [B, 1, h, w].
            target (Tensor): Ground truth [B, 1, H, W] (resized to h x w).

        Returns:
            Tensor: Scalar loss.
        """
        if target.dim() == 3:
            target = target.unsqueeze(1)
        target = resize_visibility(target.to(pred.device).float(),
                                   pred.shape[-1])
        return self.loss_weight * F.mse_loss(pred.float(), target)
