"""Margin-based softmax logits: one function behind AdaFace, ArcFace and CosFace.

Every margin head of this family changes only the target-class cosine:
``cos(clip(theta + angular, eps, pi - eps)) - additive`` (Deng et al., ArcFace, CVPR
2019: angular; Wang et al., CosFace, CVPR 2018: additive; Kim et al., AdaFace, CVPR
2022:
both, scaled per sample by the feature-norm quality indicator). The heads differ only in
how they choose ``angular`` and ``additive``.

Numerics: the cosine is clamped to ``[-1 + eps, 1 - eps]`` before ``acos`` so that the
gradient ``-1/sqrt(1 - c^2)`` stays finite when an embedding coincides with a class
centre (mmpretrain's ArcFaceClsHead returns NaN there), and the margin math runs in fp32
with autocast disabled so that bf16/fp16 autocast neither crashes nor quantises the
margin.
"""
import math
from typing import Union

import torch
import torch.nn.functional as F

__all__ = ['cosine_logits', 'margin_logits', 'adaface_margins']

Margin = Union[float, torch.Tensor]


def cosine_logits(embeddings: torch.Tensor,
                  kernel: torch.Tensor) -> torch.Tensor:
    """Cosine between each embedding and each class centre, in fp32.

    Args:
        embeddings (Tensor): [B, D], any norm.
        kernel (Tensor): Class centres as columns [D, C], any norm.

    Returns:
        Tensor: [B, C] cosines (not clamped).

    Examples:
        >>> cosine_logits(torch.eye(2), torch.eye(2))
        tensor([[1., 0.],
                [0., 1.]])
    """
    with torch.autocast(embeddings.device.type, enabled=False):
        emb = F.normalize(embeddings.float(), dim=1)
        ker = F.normalize(kernel.float(), dim=0)
        return emb @ ker


def margin_logits(cos: torch.Tensor,
                  labels: torch.Tensor,
                  angular: Margin = 0.0,
                  additive: Margin = 0.0,
                  scale: float = 64.0,
                  eps: float = 1e-3) -> torch.Tensor:
    """Apply an angular and an additive margin to the target class and scale.

    ``logit[i, j] = s * c[i, j]`` for ``j != y_i`` and
    ``s * (cos(clip(acos(c[i, y_i]) + angular_i, eps, pi - eps)) - additive_i)``
    for the target, with ``c = clamp(cos, -1 + eps, 1 - eps)``.

    Args:
        cos (Tensor): Cosines [B, C].
        labels (Tensor): Target classes [B] (int64); -1 marks a row whose
            target is not among these columns (a shard of the classes, as in
            Partial FC): that row is only scaled.
        angular (float | Tensor): Angle added to the target's angle; a float or
            a per-sample tensor [B] / [B, 1]. ArcFace: m.
        additive (float | Tensor): Cosine subtracted from the target; float or
            per-sample tensor. CosFace: m.
        scale (float): Logit scale s.
        eps (float): Clamp margin of the cosine and of the angle.

    Returns:
        Tensor: Scaled logits [B, C] in fp32.

    Examples:
        >>> cos = torch.tensor([[0.5, 0.1]])
        >>> margin_logits(cos, torch.tensor([0]), additive=0.2, scale=1.0)
        tensor([[0.3000, 0.1000]])
    """
    with torch.autocast(cos.device.type, enabled=False):
        cos = cos.float().clamp(-1 + eps, 1 - eps)
        if cos.shape[1] == 0:
            return cos * scale
        idx = labels.long().view(-1, 1)
        # No host sync: rows marked -1 keep their cosine through the where.
        absent = idx < 0
        idx = idx.clamp(min=0)
        target = cos.gather(1, idx)
        if isinstance(angular, torch.Tensor) or angular != 0.0:
            ang = angular.float().view(-1, 1) if isinstance(
                angular, torch.Tensor) else angular
            theta = torch.acos(target)
            target = torch.cos(
                torch.clamp(theta + ang, min=eps, max=math.pi - eps))
        if isinstance(additive, torch.Tensor):
            target = target - additive.float().view(-1, 1)
        elif additive != 0.0:
            target = target - additive
        target = torch.where(absent, cos.gather(1, idx), target)
        return cos.scatter(1, idx, target) * scale


def adaface_margins(margin_scaler: torch.Tensor,
                    m: float) -> tuple:
    """AdaFace's per-sample angular and additive margins.

    ``g_angular = -m * ms`` and ``g_additive = m + m * ms``: ``ms = -1`` is ArcFace(m),
    ``ms = 0`` is CosFace(m), ``ms = 1`` is CosFace(2m) with an angular bonus.

    Args:
        margin_scaler (Tensor): Feature-norm quality indicator ms in [-1, 1], [B, 1].
        m (float): Margin.

    Returns:
        tuple[Tensor, Tensor]: angular and additive margins, each [B, 1].
    """
    return -m * margin_scaler, m + m * margin_scaler
