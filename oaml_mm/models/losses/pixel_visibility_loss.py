"""BCE and Dice of pixel-level visibility logits against a soft visibility mask.

The loss of :class:`~oaml_mm.models.necks.MultiScaleOcclusionHead`. The target of
each pixel of the logit grid is the visible fraction of the image pixels it covers
(area average of the mask, in [0, 1]), so the binary cross-entropy takes soft
targets. Dice (Milletari et al., "V-Net", 3DV 2016) is computed on the *occluded*
part (1 - visibility), the small foreground whose overlap matters; a clean face
(no occluded pixel) predicted clean scores a Dice loss of 0 thanks to the
smoothing term.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from oaml_mm.errors import ConfigError
from oaml_mm.registry import MODELS

__all__ = ['PixelVisibilityLoss']


@MODELS.register_module()
class PixelVisibilityLoss(nn.Module):
    """``bce_weight * BCE(logits, target) + dice_weight * Dice(1 - p, 1 - target)``.

    Example::

        loss = dict(type='PixelVisibilityLoss', bce_weight=1.0, dice_weight=1.0)

    Args:
        bce_weight (float): Weight of the binary cross-entropy (mean over pixels).
            Defaults to 1.0.
        dice_weight (float): Weight of the soft Dice loss of the occluded part,
            ``1 - (2 sum(o_p o_t) + smooth) / (sum(o_p) + sum(o_t) + smooth)`` per
            image, averaged over images. Defaults to 1.0.
        smooth (float): Smoothing of the Dice ratio, in pixels. Defaults to 1.0.
        dice_reduction (str): ``'image'``: the Dice ratio of each image, averaged
            (a clean face then scores about 1 unless nearly every pixel is
            predicted visible, so clean faces weigh heavily); ``'batch'``: one
            ratio over all pixels of the batch (clean faces count only through
            the pixels they call occluded). Defaults to ``'image'``.
        loss_weight (float): Multiplier of the sum. Defaults to 1.0.

    Raises:
        ConfigError: A negative weight, both weights 0, ``smooth <= 0`` or an
            unknown ``dice_reduction``.
    """

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0,
                 smooth: float = 1.0, loss_weight: float = 1.0,
                 dice_reduction: str = 'image') -> None:
        super().__init__()
        if bce_weight < 0 or dice_weight < 0 or bce_weight + dice_weight == 0:
            raise ConfigError(
                'PixelVisibilityLoss: bce_weight and dice_weight must be >= 0 and '
                f'not both 0, got {bce_weight}, {dice_weight}')
        if smooth <= 0:
            raise ConfigError(
                f'PixelVisibilityLoss: smooth must be > 0, got {smooth}')
        if dice_reduction not in ('image', 'batch'):
            raise ConfigError(
                "PixelVisibilityLoss: dice_reduction must be 'image' or 'batch', "
                f'got {dice_reduction!r}')
        self.dice_reduction = dice_reduction
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)
        self.smooth = float(smooth)
        self.loss_weight = float(loss_weight)

    def forward(self, logits: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
        """The weighted loss.

        Args:
            logits (Tensor): Visibility logits [N, 1, S, S].
            target (Tensor): Visibility in [0, 1] [N, 1, S, S] (1 = visible).

        Returns:
            Tensor: Scalar loss (fp32).

        Raises:
            ConfigError: Shapes differ.
        """
        if logits.shape != target.shape:
            raise ConfigError(
                f'PixelVisibilityLoss: logits {tuple(logits.shape)} and target '
                f'{tuple(target.shape)} differ')
        logits, target = logits.float(), target.float()
        loss = logits.new_zeros(())
        if self.bce_weight:
            loss = loss + self.bce_weight * F.binary_cross_entropy_with_logits(
                logits, target)
        if self.dice_weight:
            occ_p = torch.sigmoid(-logits).flatten(1)  # 1 - sigmoid(logits)
            occ_t = (1.0 - target).flatten(1)
            if self.dice_reduction == 'batch':
                occ_p, occ_t = occ_p.reshape(1, -1), occ_t.reshape(1, -1)
            dice = (2 * (occ_p * occ_t).sum(1) + self.smooth) / (
                occ_p.sum(1) + occ_t.sum(1) + self.smooth)
            loss = loss + self.dice_weight * (1.0 - dice).mean()
        return self.loss_weight * loss
