"""OcclusionSegmenter: visibility segmented from the aligned image, not identity maps.

The occlusion head (occlusion_head.py) reads the backbone's last-stage maps, which
were trained for identity and keep little of what makes a region an occluder. This
neck reads the *image*: a small U-Net-like encoder-decoder (Ronneberger et al.,
"U-Net", MICCAI 2015) that predicts the visible fraction of every 4x4-pixel block of
the face (28x28 on a 112x112 crop) and area-pools it onto QAConv's grid
(docs/models.md, "Occlusion segmenter"). It is trained once on its own
(:class:`~oaml_mm.models.segmentors.VisibilitySegmentor`, configs/synthface/
occlusion_segmenter_synthface.py) and plugged into any recognizer by config, frozen
or fine-tuned, the way face-parsing models are reused.

A neck says what it reads: ``reads = 'image'`` here, ``'maps'`` for the occlusion
head; :class:`~oaml_mm.models.recognizers.OAMLRecognizer` passes it that input.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from oaml_mm.errors import ConfigError
from oaml_mm.registry import MODELS
from ..functional.visibility import resize_visibility

__all__ = ['OcclusionSegmenter']


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> List[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@MODELS.register_module()
class OcclusionSegmenter(BaseModule):
    """Four stride-2 encoder stages, two decoder stages with skips, 1/4-scale logits.

    Encoder stage ``i``: ``conv3x3(stride 2) -> BN -> ReLU -> conv3x3 -> BN -> ReLU``
    to ``channels[i]`` (112 -> 56 -> 28 -> 14 -> 7 on a 112x112 face). Decoder: the
    deepest map upsampled x2 (nearest), concatenated with stage 3, ``conv3x3 -> BN ->
    ReLU`` to ``channels[2]``; again x2 with stage 2 to ``channels[1]``; a 1x1 conv to
    one logit per 4x4-pixel block. About 0.33M parameters with the default widths.
    Every convolution is followed by its BN inside an ``nn.Sequential``, so
    :func:`~oaml_mm.models.utils.fold_batchnorm` folds them all.

    Examples::

        # Standalone: trained by VisibilitySegmentor (its own config).
        segmenter = dict(type='OcclusionSegmenter')
        # In a recognizer, frozen, from that training's checkpoint.
        neck = dict(type='OcclusionSegmenter', frozen=True,
                    init_cfg=dict(type='Pretrained', prefix='segmenter.',
                                  checkpoint='work_dirs/seg/iter_3000.pth'))

    Args:
        channels (Sequence[int]): Widths of the four encoder stages.
            Defaults to (16, 32, 64, 96).
        frozen (bool): Keep every parameter fixed and the BatchNorms in eval mode
            (:meth:`loss` then predicts without a loss). Defaults to False.
        init_cfg (dict, optional): mmengine initialisation config, e.g.
            ``Pretrained`` with ``prefix='segmenter.'`` for a checkpoint of
            :class:`~oaml_mm.models.segmentors.VisibilitySegmentor`.

    Raises:
        ConfigError: ``channels`` is not four positive integers.

    Returns (forward):
        Tensor: Visibility [B, 1, s, s] in [0, 1] (1 = visible), ``s`` the
        ``out_size`` asked for (the 1/4-scale map when None).
    """

    #: The input this neck reads (OAMLRecognizer passes it the preprocessed image).
    reads = 'image'
    #: The input has three colour channels (the recognizer checks maps readers only).
    in_channels = 3

    def __init__(self,
                 channels: Sequence[int] = (16, 32, 64, 96),
                 frozen: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        channels = tuple(channels)
        if len(channels) != 4 or any(
                not isinstance(c, int) or isinstance(c, bool) or c <= 0
                for c in channels):
            raise ConfigError(
                'OcclusionSegmenter: channels must be four positive integers, '
                f'got {channels!r}')
        self.channels = channels
        self.frozen = bool(frozen)
        c1, c2, c3, c4 = channels
        self.stages = nn.ModuleList([
            nn.Sequential(*_conv_bn_relu(cin, cout, 2),
                          *_conv_bn_relu(cout, cout))
            for cin, cout in ((3, c1), (c1, c2), (c2, c3), (c3, c4))
        ])
        self.up1 = nn.Sequential(*_conv_bn_relu(c4 + c3, c3))
        self.up2 = nn.Sequential(*_conv_bn_relu(c3 + c2, c2))
        self.out = nn.Conv2d(c2, 1, 1)
        if self.frozen:
            for p in self.parameters():
                p.requires_grad_(False)
            self.train(False)

    def train(self, mode: bool = True) -> 'OcclusionSegmenter':
        """Set training mode; a frozen segmenter stays in eval mode."""
        return super().train(mode and not self.frozen)

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Occlusion logits at 1/4 of the input side.

        Args:
            images (Tensor): Preprocessed faces [B, 3, H, W], ``H`` and ``W``
                multiples of 16.

        Returns:
            Tensor: [B, 1, H/4, W/4] logits of *visibility* (sigmoid = visible).

        Raises:
            ConfigError: Not [B, 3, H, W] with sides divisible by 16.
        """
        if images.dim() != 4 or images.shape[1] != 3 or \
                images.shape[-1] % 16 or images.shape[-2] % 16:
            raise ConfigError(
                'OcclusionSegmenter: expected images [B, 3, H, W] with H and W '
                f'multiples of 16, got {tuple(images.shape)}')
        feats = []
        x = images
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        x = F.interpolate(x, scale_factor=2.0, mode='nearest')
        x = self.up1(torch.cat([x, feats[2]], 1))
        x = F.interpolate(x, scale_factor=2.0, mode='nearest')
        x = self.up2(torch.cat([x, feats[1]], 1))
        return self.out(x)

    def forward(self, images: torch.Tensor,
                out_size: Optional[int] = None) -> torch.Tensor:
        """Predicted visibility, area-pooled onto ``out_size``.

        Args:
            images (Tensor): Preprocessed faces [B, 3, H, W].
            out_size (int, optional): Side of the output grid (QAConv's: the
                backbone's map side). None: the 1/4-scale map.

        Returns:
            Tensor: [B, 1, out_size, out_size] in [0, 1].
        """
        vis = torch.sigmoid(self.forward_logits(images))
        return vis if out_size is None else resize_visibility(vis, out_size)

    def loss(self, batches: Sequence[torch.Tensor],
             targets: Sequence[Optional[torch.Tensor]],
             out_size: Optional[int] = None
             ) -> Tuple[List[torch.Tensor], Dict[str, torch.Tensor]]:
        """Predict several image batches at once and score the labelled ones.

        The loss is binary cross-entropy against the true visibility (soft labels
        in [0, 1]): at the 1/4-scale map when the target is at least that fine
        (the target is area-pooled onto it), else on the target's own grid (the
        prediction is area-pooled onto it). A frozen segmenter predicts under
        ``no_grad`` and returns no loss.

        Args:
            batches (Sequence[Tensor]): ``[B_i, 3, H, W]`` preprocessed images.
            targets (Sequence[Tensor | None]): ``[B_i, 1, h, w]`` true visibility
                per batch, None for a batch without one.
            out_size (int, optional): Side of the returned predictions (None:
                the 1/4-scale map).

        Returns:
            tuple: The detached predictions ``[B_i, 1, s, s]`` per batch and
            ``{'loss': scalar}`` (empty when frozen or nothing is labelled).
        """
        images = torch.cat(list(batches))
        with torch.set_grad_enabled(torch.is_grad_enabled()
                                    and not self.frozen):
            logits = self.forward_logits(images)
        splits = [b.shape[0] for b in batches]
        losses: Dict[str, torch.Tensor] = {}
        labelled = [(lg, t) for lg, t in zip(logits.split(splits), targets)
                    if t is not None]
        if labelled and not self.frozen:
            side = logits.shape[-1]
            terms, count = logits.new_zeros(()), 0
            for lg, t in labelled:
                t = t.to(lg.device, lg.dtype).clamp(0, 1)
                if t.shape[-1] >= side:
                    t = resize_visibility(t, side)
                    terms = terms + F.binary_cross_entropy_with_logits(
                        lg, t, reduction='sum')
                else:
                    p = resize_visibility(torch.sigmoid(lg), t.shape[-1])
                    terms = terms + F.binary_cross_entropy(
                        p.clamp(1e-6, 1 - 1e-6), t, reduction='sum')
                count += t.numel()
            losses['loss'] = terms / count
        vis = torch.sigmoid(logits.detach())
        if out_size is not None:
            vis = resize_visibility(vis, out_size)
        return list(vis.split(splits)), losses
