"""Margin softmax heads for face recognition: AdaFace, ArcFace and CosFace.

* AdaFace: Kim et al., "AdaFace: Quality Adaptive Margin for Face Recognition",
  CVPR 2022,
  https://arxiv.org/abs/2204.00964 (defaults of the public code's training recipe).
* ArcFace: Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face
  Recognition", CVPR 2019, https://arxiv.org/abs/1801.07698
* CosFace: Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition",
  CVPR 2018, https://arxiv.org/abs/1801.09414

The three heads are thin: each chooses an angular and an additive margin and calls
:func:`oaml_mm.models.functional.margin_logits`. They share one contract:
``forward(embeddings, norms, labels) -> scaled logits`` and
``loss(embeddings, norms, labels) -> dict(loss=..., accuracy=...)``.
"""
from abc import abstractmethod
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from oaml_mm.errors import ConfigError
from oaml_mm.registry import MODELS
from ..functional.margin import adaface_margins, cosine_logits, margin_logits

__all__ = ['BaseMarginHead', 'AdaFaceHead', 'ArcFaceHead', 'CosFaceHead']

Margin = Union[float, torch.Tensor]


class BaseMarginHead(BaseModule):
    """Class-centre kernel, margin scale and loss shared by the margin heads.

    The kernel's columns start with unit norm: columns with tiny norms (a common
    initialisation) left the loss at chance level in the CPU feasibility study
    (docs/synthface.md).

    Args:
        in_channels (int): Embedding size D.
        num_classes (int): Number of identities C.
        m (float): Margin.
        s (float): Logit scale.
        eps (float): Cosine/angle clamp margin.
        loss (dict): Loss config built from the registry.
        init_cfg (dict, optional): mmengine initialisation config.

    Attributes:
        branch_name (str): Name of the global branch this head trains, used in the
            loss and metric keys (``loss_arcface``, ``lfw/arcface/accuracy``);
            ``'adaface'`` for :class:`AdaFaceHead` (docs/models.md, "Swapping
            the margin head").
    """

    branch_name = 'margin'

    def __init__(self,
                 in_channels: int,
                 num_classes: int,
                 m: float,
                 s: float = 64.0,
                 eps: float = 1e-3,
                 loss: dict = dict(type='CrossEntropyLoss', loss_weight=1.0),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if in_channels <= 0 or num_classes <= 0:
            raise ConfigError(
                f'{type(self).__name__}: in_channels and num_classes must be '
                f'positive, got {in_channels}, {num_classes}')
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.m = float(m)
        self.s = float(s)
        self.eps = float(eps)
        # Fraction of the margin in use; MarginWarmupHook ramps it from 0 to 1.
        self.margin_scale = 1.0
        self.kernel = nn.Parameter(torch.empty(in_channels, num_classes))
        self.reset_kernel()
        self.loss_module = MODELS.build(loss)

    def reset_kernel(self) -> None:
        """Draw kernel columns uniformly on the unit sphere."""
        with torch.no_grad():
            self.kernel.normal_()
            self.kernel.div_(self.kernel.norm(dim=0, keepdim=True))

    def init_weights(self) -> None:
        if self.init_cfg:
            super().init_weights()

    def set_margin_scale(self, factor: float) -> None:
        """Use ``factor * m`` as the margin (margin warm-up).

        Args:
            factor (float): In [0, 1].
        """
        self.margin_scale = float(min(max(factor, 0.0), 1.0))

    @property
    def margin(self) -> float:
        """The margin in use now: ``margin_scale * m``."""
        return self.margin_scale * self.m

    @abstractmethod
    def margins(self, norms: torch.Tensor) -> Tuple[Margin, Margin]:
        """Angular and additive margins: floats or per-sample tensors [B, 1]."""

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosines to every class centre [B, C] (fp32, no margin)."""
        return cosine_logits(embeddings, self.kernel)

    def forward(self, embeddings: torch.Tensor, norms: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        """Scaled margin logits.

        Args:
            embeddings (Tensor): [B, D] (normalised here).
            norms (Tensor): Embedding norms [B, 1] (AdaFace's quality indicator).
            labels (Tensor): Identities [B].

        Returns:
            Tensor: Logits [B, C] in fp32.
        """
        labels = labels.view(-1).long()
        angular, additive = self.margins(norms)
        return margin_logits(self.cosine(embeddings), labels, angular,
                             additive, self.s, self.eps)

    def loss(self, embeddings: torch.Tensor, norms: torch.Tensor,
             labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Margin softmax loss and top-1 accuracy on the margin-free cosines.

        Returns:
            dict: ``loss`` (scalar, with grad) and ``accuracy`` (scalar, no grad).
        """
        labels = labels.view(-1).long()
        if labels.numel() and (labels.min() < 0
                               or labels.max() >= self.num_classes):
            raise ConfigError(
                f'{type(self).__name__}: labels must lie in [0, '
                f'{self.num_classes}), got [{int(labels.min())}, '
                f'{int(labels.max())}]; num_classes does not fit the data set')
        logits = self(embeddings, norms, labels)
        loss = self.loss_module(logits, labels)
        with torch.no_grad():
            acc = (logits.argmax(dim=1) == labels).float().mean()
        return dict(loss=loss, accuracy=acc)


@MODELS.register_module()
class ArcFaceHead(BaseMarginHead):
    """ArcFace: ``s * cos(theta + m)`` at the target class.

    Example::

        head = dict(type='ArcFaceHead', in_channels=512, num_classes=85742, m=0.5)

    Args:
        in_channels (int): Embedding size. Defaults to 512.
        num_classes (int): Number of identities. Defaults to 10572 (CASIA-WebFace).
        m (float): Angular margin. Defaults to 0.5.
        s (float): Scale. Defaults to 64.
        eps (float): Clamp margin. Defaults to 1e-3.
        loss (dict): Loss config. Defaults to CrossEntropyLoss.
    """

    branch_name = 'arcface'

    def __init__(self,
                 in_channels: int = 512,
                 num_classes: int = 10572,
                 m: float = 0.5,
                 s: float = 64.0,
                 eps: float = 1e-3,
                 loss: dict = dict(type='CrossEntropyLoss', loss_weight=1.0),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(in_channels, num_classes, m, s, eps, loss, init_cfg)

    def margins(self, norms: torch.Tensor) -> Tuple[Margin, Margin]:
        return self.margin, 0.0


@MODELS.register_module()
class CosFaceHead(BaseMarginHead):
    """CosFace: ``s * (cos(theta) - m)`` at the target class.

    Example::

        head = dict(type='CosFaceHead', in_channels=512, num_classes=85742, m=0.4)

    Args:
        in_channels (int): Embedding size. Defaults to 512.
        num_classes (int): Number of identities. Defaults to 10572.
        m (float): Additive margin. Defaults to 0.4.
        s (float): Scale. Defaults to 64.
        eps (float): Clamp margin. Defaults to 1e-3.
        loss (dict): Loss config. Defaults to CrossEntropyLoss.
    """

    branch_name = 'cosface'

    def __init__(self,
                 in_channels: int = 512,
                 num_classes: int = 10572,
                 m: float = 0.4,
                 s: float = 64.0,
                 eps: float = 1e-3,
                 loss: dict = dict(type='CrossEntropyLoss', loss_weight=1.0),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(in_channels, num_classes, m, s, eps, loss, init_cfg)

    def margins(self, norms: torch.Tensor) -> Tuple[Margin, Margin]:
        return 0.0, self.margin


@MODELS.register_module()
class AdaFaceHead(BaseMarginHead):
    """AdaFace: margins adapted to image quality, measured by the embedding norm.

    ``ms = clip(h * (safe_norm - batch_mean) / (batch_std + eps), -1, 1)`` with
    ``safe_norm = clip(norm, 0.001, 100)`` (detached); the target logit is
    ``s * (cos(clip(theta - m*ms, eps, pi - eps)) - (m + m*ms))``. ``batch_mean`` and
    ``batch_std`` are EMAs of the batch's norm statistics, updated **only in training
    mode** (the public code also updates them at evaluation) and only the mean when a
    batch holds one sample (its unbiased std is undefined).

    Examples::

        head = dict(type='AdaFaceHead', in_channels=512, num_classes=10572)
        head = dict(type='AdaFaceHead', in_channels=128, num_classes=400,
                    m=0.4, h=0.333, s=64.0, t_alpha=0.01)

    Args:
        in_channels (int): Embedding size. Defaults to 512.
        num_classes (int): Number of identities. Defaults to 10572.
        m (float): Margin. Defaults to 0.4.
        h (float): Concentration of the quality indicator. Defaults to 0.333.
        s (float): Scale. Defaults to 64.
        t_alpha (float): EMA momentum of the norm statistics. Defaults to 0.01.
        eps (float): Clamp margin. Defaults to 1e-3.
        loss (dict): Loss config. Defaults to CrossEntropyLoss.
    """

    branch_name = 'adaface'

    def __init__(self,
                 in_channels: int = 512,
                 num_classes: int = 10572,
                 m: float = 0.4,
                 h: float = 0.333,
                 s: float = 64.0,
                 t_alpha: float = 0.01,
                 eps: float = 1e-3,
                 loss: dict = dict(type='CrossEntropyLoss', loss_weight=1.0),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(in_channels, num_classes, m, s, eps, loss, init_cfg)
        self.h = float(h)
        self.t_alpha = float(t_alpha)
        self.register_buffer('batch_mean', torch.full((1, ), 20.0))
        self.register_buffer('batch_std', torch.full((1, ), 100.0))

    def margin_scaler(self, norms: torch.Tensor) -> torch.Tensor:
        """Quality indicator ms [B, 1]; updates the EMA when training."""
        with torch.no_grad(), torch.autocast(norms.device.type, enabled=False):
            safe = norms.detach().float().reshape(-1, 1).clamp(0.001, 100)
            if self.training:
                a = self.t_alpha
                self.batch_mean.mul_(1 - a).add_(a * safe.mean())
                if safe.numel() > 1:
                    self.batch_std.mul_(1 - a).add_(a * safe.std())
            ms = (safe - self.batch_mean) / (self.batch_std + self.eps)
            return (ms * self.h).clamp(-1, 1)

    def margins(self, norms: torch.Tensor) -> Tuple[Margin, Margin]:
        return adaface_margins(self.margin_scaler(norms), self.margin)
