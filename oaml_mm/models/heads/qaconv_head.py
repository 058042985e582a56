"""QAConvHead: QAConv v2.1's learnable scoring layers, matching and in-batch losses.

Liao & Shao, "Interpretable and Generalizable Person Re-Identification with
Query-Adaptive Convolution", ECCV 2020, https://arxiv.org/abs/1904.10424, and QAConv v2
(Graph Sampling, CVPR 2022). Submodule names (``bn``, ``fc``, ``logit_bn``) follow the
public v2.1 code. All scoring goes through
:func:`oaml_mm.models.functional.qaconv_match`; this module only owns the parameters,
the input normalisation and the losses.
"""
import inspect
import numbers
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from oaml_mm.errors import ConfigError
from oaml_mm.registry import MODELS
from ..functional.qaconv import (DEFAULT_MAX_CHUNK_ELEMS, VIS_MODE_ALIASES,
                                 VIS_MODES, canonical_vis_mode, normalize_maps,
                                 qaconv_match, qaconv_match_pairs)
from ..functional.visibility import (calibrate_visibility, check_vis_range,
                                     resize_visibility)

__all__ = ['QAConvHead']


@MODELS.register_module()
class QAConvHead(BaseModule):
    """QAConv matcher with visibility weighting and in-batch metric losses.

    Examples::

        qaconv_head = dict(type='QAConvHead', in_channels=512)   # seed OAML
        qaconv_head = dict(
            type='QAConvHead', in_channels=128, vis_mode='gate',
            losses=dict(
                pairwise=dict(type='PairwiseMatchingLoss', loss_weight=1.0),
                triplet=dict(type='BatchHardTripletLoss', margin=16.0,
                             loss_weight=0.5)))

    Args:
        in_channels (int): Channels of the feature maps. Defaults to 512.
        feat_size (int): Side of the feature maps (7 for 112x112). Defaults to 7
            (``OAMLRecognizer`` passes its backbone's ``map_size`` when its
            config leaves it out or None).
        vis_mode (str): How visibility enters: ``'multiply'`` (default; old name
            ``'seed'``, still accepted and stored as ``'multiply'``), ``'gate'`` or
            ``'none'``; see :mod:`oaml_mm.models.functional.qaconv`.
        vis_range (Sequence[float], optional): ``(low, high)``: at evaluation and
            inference (eval mode) every visibility map is stretched by
            :func:`~oaml_mm.models.functional.visibility.calibrate_visibility` before
            matching, so cells above ``high`` count fully and cells below ``low``
            not at all. Training matches with the maps as given (the true masks
            with ``qaconv_train_vis='gt'``): stretching those too trained a weaker
            backbone on SynthFace (docs/synthface.md). None (default) uses the maps
            as they are, as the original OAML recipe does. Inside an
            ``OAMLRecognizer`` this is the model's one calibration
            (``test_cfg.vis_range``; this key is its older name and must agree
            with it), which the global branch reads too.
        max_chunk_elems (int): Most correlation values computed at once.
        half_test (bool): Correlate in fp16 (CUDA) / bf16 (CPU) when not training.
            Defaults to False.
        normalize (bool): L2-normalise maps over channels before matching (QAConv's
            convention). Defaults to True.
        losses (dict): Name -> loss config (a loss taking ``feat_size`` gets
            this head's unless its config names one). Each loss is called as
            ``loss(scores, labels, maps=..., vis=..., matcher=...)`` and returns
            ``(loss, accuracy)``. Defaults to the pairwise matching loss and a
            batch-hard triplet loss (margin 16, weight 0.5).
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 in_channels: int = 512,
                 feat_size: int = 7,
                 vis_mode: str = 'multiply',
                 vis_range: Optional[Sequence[float]] = None,
                 max_chunk_elems: int = DEFAULT_MAX_CHUNK_ELEMS,
                 half_test: bool = False,
                 normalize: bool = True,
                 losses: Optional[Dict[str, dict]] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if VIS_MODE_ALIASES.get(vis_mode, vis_mode) not in VIS_MODES:
            raise ConfigError(
                f'QAConvHead: vis_mode {vis_mode!r} is not one of {VIS_MODES} '
                f'(or the old names {tuple(VIS_MODE_ALIASES)})')
        vis_mode = canonical_vis_mode(vis_mode)
        if isinstance(feat_size, bool) or \
                not isinstance(feat_size, numbers.Integral) or feat_size < 1:
            raise ConfigError(
                f'QAConvHead: feat_size must be a positive int (the side of '
                f'the feature maps), got {feat_size!r}; in OAMLRecognizer leave '
                f'it out (or None) to take the backbone\'s map_size')
        self.in_channels = in_channels
        feat_size = int(feat_size)
        self.feat_size = feat_size
        self.vis_mode = vis_mode
        self.vis_range = check_vis_range(vis_range)
        self.max_chunk_elems = int(max_chunk_elems)
        self.half_test = half_test
        self.normalize = normalize
        hw = feat_size * feat_size
        self.bn = nn.BatchNorm1d(1)
        self.fc = nn.Linear(hw, 1)
        self.logit_bn = nn.BatchNorm1d(1)
        self.reset_parameters()
        if losses is None:
            losses = dict(
                pairwise=dict(type='PairwiseMatchingLoss', loss_weight=1.0),
                triplet=dict(
                    type='BatchHardTripletLoss', margin=16.0, loss_weight=0.5))
        if not losses:
            raise ConfigError('QAConvHead: losses must name at least one loss')
        self.losses = nn.ModuleDict(
            {name: MODELS.build(self._on_our_grid(cfg))
             for name, cfg in losses.items()})

    def _on_our_grid(self, cfg: dict) -> dict:
        """A loss config whose class takes ``feat_size`` (a class memory of
        maps) gets ours unless it names one."""
        cls = MODELS.get(cfg.get('type')) if isinstance(cfg, dict) else None
        if cls is not None and cfg.get('feat_size') is None and \
                'feat_size' in inspect.signature(cls).parameters:
            return dict(cfg, feat_size=self.feat_size)
        return cfg

    def reset_parameters(self) -> None:
        """QAConv's initialisation: unit BNs and an averaging FC (weight 1/hw)."""
        self.bn.reset_parameters()
        self.logit_bn.reset_parameters()
        self.fc.reset_parameters()
        with torch.no_grad():
            self.fc.weight.fill_(1.0 / (self.feat_size * self.feat_size))

    def init_weights(self) -> None:
        if self.init_cfg:
            super().init_weights()

    def _prep(self, maps: torch.Tensor) -> torch.Tensor:
        if maps.dim() != 4 or maps.shape[1] != self.in_channels or \
                maps.shape[-1] != self.feat_size:
            raise ConfigError(
                f'QAConvHead: expected maps [N, {self.in_channels}, '
                f'{self.feat_size}, {self.feat_size}], got {tuple(maps.shape)}')
        return normalize_maps(maps) if self.normalize else maps

    def _vis(self, vis: Optional[torch.Tensor],
             calibrated: bool = False) -> Optional[torch.Tensor]:
        # A map on another grid (7x7 true masks, 14x14 maps) is brought onto ours.
        vis = resize_visibility(vis, self.feat_size)
        if self.training or calibrated:
            return vis
        return calibrate_visibility(vis, self.vis_range)

    def _half(self) -> bool:
        return self.half_test and not self.training

    def _match_prepared(self, probe: torch.Tensor, gallery: torch.Tensor,
                        probe_vis: Optional[torch.Tensor],
                        gallery_vis: Optional[torch.Tensor]) -> torch.Tensor:
        return qaconv_match(probe, gallery, self.bn, self.fc, self.logit_bn,
                            probe_vis, gallery_vis, self.vis_mode,
                            self.max_chunk_elems, self._half())

    def match(self,
              probe_maps: torch.Tensor,
              gallery_maps: torch.Tensor,
              probe_vis: Optional[torch.Tensor] = None,
              gallery_vis: Optional[torch.Tensor] = None,
              calibrated: bool = False) -> torch.Tensor:
        """Scores of every probe against every gallery image.

        Args:
            probe_maps (Tensor): [P, C, h, w].
            gallery_maps (Tensor): [G, C, h, w].
            probe_vis (Tensor, optional): [P, 1, h', w'] visibility in [0, 1];
                a grid other than the maps' is resized to theirs
                (:func:`~oaml_mm.models.functional.visibility.resize_visibility`).
            gallery_vis (Tensor, optional): [G, 1, h', w'].
            calibrated (bool): Both maps are calibrated already (templates
                pooled from calibrated maps, with a probe calibrated by
                ``vis_range``): not stretched again. Defaults to False.

        Returns:
            Tensor: [P, G] scores (higher = more similar).
        """
        return self._match_prepared(
            self._prep(probe_maps), self._prep(gallery_maps),
            self._vis(probe_vis, calibrated),
            self._vis(gallery_vis, calibrated))

    def match_pairs(self,
                    maps_a: torch.Tensor,
                    maps_b: torch.Tensor,
                    vis_a: Optional[torch.Tensor] = None,
                    vis_b: Optional[torch.Tensor] = None,
                    calibrated: bool = False) -> torch.Tensor:
        """Scores of the pairs ``(maps_a[i], maps_b[i])`` [N], row-wise
        (``calibrated`` as in :meth:`match`)."""
        return qaconv_match_pairs(self._prep(maps_a), self._prep(maps_b),
                                  self.bn, self.fc, self.logit_bn,
                                  self._vis(vis_a, calibrated),
                                  self._vis(vis_b, calibrated),
                                  self.vis_mode, self.max_chunk_elems,
                                  self._half())

    def loss(self,
             feat_maps: torch.Tensor,
             labels: torch.Tensor,
             vis: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """In-batch QAConv losses.

        The batch is matched against itself (every image is probe and gallery).

        Args:
            feat_maps (Tensor): Backbone maps [B, C, h, w].
            labels (Tensor): Identities [B].
            vis (Tensor, optional): Visibility [B, 1, h, w]; the recognizer passes it
                detached.

        Returns:
            dict: ``loss_{name}`` (weighted by each loss's ``loss_weight``) and
            ``acc_{name}`` per configured loss.
        """
        maps = self._prep(feat_maps)
        labels = labels.view(-1)
        scores = self._match_prepared(maps, maps, vis, vis)
        out = {}
        for name, loss_module in self.losses.items():
            loss, acc = loss_module(
                scores, labels, maps=maps, vis=vis,
                matcher=self._match_prepared)
            out[f'loss_{name}'] = loss
            out[f'acc_{name}'] = acc
        return out
