"""MultiScaleOcclusionHead: pixel-level visibility from several backbone stages.

The occlusion head on the last stage (:class:`OcclusionHead`) sees maps trained for
identity, which keep little of what makes a region an occluder. This head reads the
*detached* outputs of earlier stages too (stages 2-4 of the IResNet by default, where
edges and textures still exist), fuses them top-down as a feature pyramid does (Lin
et al., "Feature Pyramid Networks for Object Detection", CVPR 2017: a 1x1 lateral
convolution per stage, nearest upsampling, sum), predicts visibility logits on a
fine grid (28x28 or 56x56 at 112x112 inputs) trained against pixel-level masks, and
area-averages the probabilities onto QAConv's grid (docs/models.md, "Multi-scale
occlusion head").

Like :class:`OcclusionHead` it is a neck that owns its loss. ``reads = 'stages'``
tells the recognizer to pass it the stage outputs
(:meth:`IResNet.forward_stages`) instead of the maps.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from oaml_mm.errors import ConfigError
from oaml_mm.registry import MODELS
from ..functional.visibility import resize_visibility

__all__ = ['MultiScaleOcclusionHead']


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@MODELS.register_module()
class MultiScaleOcclusionHead(BaseModule):
    """Fuse stages top-down, predict pixel-level visibility, pool it to the grid.

    For the stages ``(s_1, ..., s_n)`` (finest first): ``lateral_i`` = conv1x1
    (C_i -> ``channels``) of stage s_i; from the coarsest, ``p = lateral_n``, then
    ``p = lateral_i + upsample_nearest(p)`` down to the finest stage's side; then
    conv3x3-BN-ReLU, nearest upsampling to ``out_size`` when it is finer,
    conv3x3-BN-ReLU and conv1x1 -> one visibility logit per pixel of the
    ``out_size x out_size`` grid (sigmoid: 1 = visible).

    Examples::

        # IR-18 at width 0.25 (stages 32/64/128 channels), 28x28 logits.
        neck = dict(type='MultiScaleOcclusionHead', in_channels=(32, 64, 128),
                    stages=(2, 3, 4), channels=32, out_size=28,
                    loss=dict(type='PixelVisibilityLoss', bce_weight=1.0,
                              dice_weight=1.0))

    Args:
        in_channels (Sequence[int]): Channels of the stages read, in the order of
            ``stages``. Defaults to (128, 256, 512) (IResNet at full width).
        stages (Sequence[int]): Backbone stages read (1-4, increasing). Defaults to
            (2, 3, 4).
        channels (int): Width of the pyramid. Defaults to 64.
        out_size (int): Side of the predicted logits; a multiple of the finest
            stage's side or equal to it (28 or 56 at 112x112 inputs). Defaults to 28.
        input_size (int): Side of the images, to check ``out_size``. Defaults to
            112.
        loss (dict): Loss of the pixel logits against the true visibility,
            called as ``loss(logits [N, 1, S, S], target [N, 1, S, S])``.
            Defaults to ``PixelVisibilityLoss``.
        init_cfg (dict, optional): mmengine initialisation config.

    Returns (forward):
        Tensor: Visibility [B, 1, g, g] in [0, 1] (1 = visible), the area average
        of the pixel probabilities over each cell of the ``g x g`` grid.

    Raises:
        ConfigError: Inconsistent ``stages`` / ``in_channels`` / ``out_size``.
    """

    #: What the recognizer passes to this neck: the backbone's stage outputs.
    reads = 'stages'

    def __init__(self,
                 in_channels: Sequence[int] = (128, 256, 512),
                 stages: Sequence[int] = (2, 3, 4),
                 channels: int = 64,
                 out_size: int = 28,
                 input_size: int = 112,
                 loss: dict = dict(type='PixelVisibilityLoss'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        stages = tuple(int(s) for s in stages)
        in_channels = tuple(int(c) for c in in_channels)
        if not stages or list(stages) != sorted(set(stages)) or \
                not set(stages) <= {1, 2, 3, 4}:
            raise ConfigError(
                'MultiScaleOcclusionHead: stages must be increasing stage numbers'
                f' of 1-4, got {stages}')
        if len(in_channels) != len(stages) or min(in_channels) <= 0:
            raise ConfigError(
                f'MultiScaleOcclusionHead: in_channels {in_channels} must give one'
                f' positive width per stage of {stages}')
        if channels <= 0:
            raise ConfigError(
                f'MultiScaleOcclusionHead: channels must be positive, got {channels}')
        finest = input_size // 2**stages[0]
        if out_size < finest or out_size % finest:
            raise ConfigError(
                f'MultiScaleOcclusionHead: out_size={out_size} must be a multiple '
                f'of the finest stage side {finest} (stage {stages[0]} at '
                f'{input_size}x{input_size} inputs)')
        self.stages = stages
        self.in_channels = in_channels
        self.out_size = int(out_size)
        #: Side of the true masks the recognizer hands to :meth:`loss`.
        self.target_size = self.out_size
        self.laterals = nn.ModuleList(
            nn.Conv2d(c, channels, 1) for c in in_channels)
        self.fuse = _conv_bn_relu(channels, channels)
        self.refine = _conv_bn_relu(channels, channels)
        self.out = nn.Conv2d(channels, 1, 1)
        self.loss_module = MODELS.build(loss)

    def _check(self, feats: Sequence[torch.Tensor]) -> None:
        if len(feats) != len(self.stages) or any(
                f.dim() != 4 or f.shape[1] != c
                for f, c in zip(feats, self.in_channels)):
            shapes = [tuple(f.shape) for f in feats]
            raise ConfigError(
                f'MultiScaleOcclusionHead: expected the maps of stages '
                f'{self.stages} with {self.in_channels} channels, got {shapes}; '
                'set in_channels to the backbone stage widths')

    def forward_logits(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Pixel-level visibility logits.

        Args:
            feats (Sequence[Tensor]): The maps of ``stages`` (finest first),
                ``[B, C_i, h_i, w_i]`` each (the recognizer passes them detached).

        Returns:
            Tensor: [B, 1, out_size, out_size] logits (sigmoid = visibility).
        """
        self._check(feats)
        p = self.laterals[-1](feats[-1])
        for lateral, f in zip(self.laterals[-2::-1], feats[-2::-1]):
            p = lateral(f) + F.interpolate(p, size=f.shape[-2:], mode='nearest')
        p = self.fuse(p)
        if p.shape[-1] != self.out_size:
            p = F.interpolate(p, size=(self.out_size, self.out_size),
                              mode='nearest')
        return self.out(self.refine(p))

    def forward(self, feats: Sequence[torch.Tensor],
                grid_size: Optional[int] = None) -> torch.Tensor:
        """Visibility on the matching grid.

        Args:
            feats (Sequence[Tensor]): See :meth:`forward_logits`.
            grid_size (int, optional): Side of the grid (the side of the maps
                QAConv matches; the recognizer passes it). None: the side of the
                last stage read.

        Returns:
            Tensor: [B, 1, g, g] in [0, 1], area averages of the pixel
            probabilities.
        """
        grid = feats[-1].shape[-1] if grid_size is None else int(grid_size)
        return self._pool(torch.sigmoid(self.forward_logits(feats)), grid)

    def _pool(self, prob: torch.Tensor, grid: int) -> torch.Tensor:
        """Area average onto ``grid x grid`` cells (a fixed-kernel average pool
        when the grid divides ``out_size``: exportable to ONNX)."""
        if self.out_size % grid == 0:
            k = self.out_size // grid
            return F.avg_pool2d(prob, k, k) if k > 1 else prob
        return resize_visibility(prob, grid)

    def loss(self, batches: Sequence[Sequence[torch.Tensor]],
             targets: Sequence[Optional[torch.Tensor]],
             grid_size: Optional[int] = None
             ) -> Tuple[List[torch.Tensor], Dict[str, torch.Tensor]]:
        """Predict several batches in one forward and score the labelled ones.

        Args:
            batches (Sequence[Sequence[Tensor]]): Per batch, the (detached) maps
                of ``stages``.
            targets (Sequence[Tensor | None]): True visibility per batch
                ``[B_i, 1, H, W]`` (any side; brought onto ``out_size`` by area
                average down, nearest up), None for a batch without one.
            grid_size (int, optional): See :meth:`forward`.

        Returns:
            tuple: Detached visibility ``[B_i, 1, g, g]`` per batch, and
            ``{'loss': scalar}`` over the labelled batches (empty if none).
        """
        feats = [torch.cat([b[k] for b in batches])
                 for k in range(len(self.stages))]
        logits = self.forward_logits(feats)
        grid = feats[-1].shape[-1] if grid_size is None else int(grid_size)
        vis = self._pool(torch.sigmoid(logits.detach()), grid)
        sizes = [b[0].shape[0] for b in batches]
        labelled = [(lg, t) for lg, t in zip(logits.split(sizes), targets)
                    if t is not None]
        losses: Dict[str, torch.Tensor] = {}
        if labelled:
            target = torch.cat([
                resize_visibility(t.to(logits.device).float(), self.out_size)
                for _, t in labelled])
            losses['loss'] = self.loss_module(
                torch.cat([lg for lg, _ in labelled]), target)
        return list(vis.split(sizes)), losses
