"""MSE between a predicted visibility map and the ground-truth mask (OAML seed 3.3.4).

The ground truth may come at image resolution or already at the map resolution; it is
averaged down to the prediction's grid (area interpolation), so each cell's target is
the
visible fraction of the pixels it covers.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from oaml_mm.errors import ConfigError
from oaml_mm.registry import MODELS

__all__ = ['OcclusionMSELoss', 'resize_visibility']


def resize_visibility(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Average a visibility mask down to ``size x size`` cells.

    Args:
        mask (Tensor): [B, 1, H, W] or [B, H, W] in [0, 1].
        size (int): Side of the target grid.

    Returns:
        Tensor: [B, 1, size, size] (fp32).
    """
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ConfigError(
            f'visibility masks must be [B, 1, H, W], got {tuple(mask.shape)}')
    mask = mask.float()
    if mask.shape[-2:] == (size, size):
        return mask
    return F.adaptive_avg_pool2d(mask, size)


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
        target = resize_visibility(target.to(pred.device), pred.shape[-1])
        return self.loss_weight * F.mse_loss(pred.float(), target)
