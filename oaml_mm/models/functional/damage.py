"""Feature damage: how much of a cell's features an occluder destroys.

The idea of PDSN (Song et al., "Occlusion Robust Face Recognition Based on Mask
Learning With Pairwise Differential Siamese Network", ICCV 2019): paste an
occluder on a face and measure, per cell of the feature map, how far the features
move. A cell half covered by a thin frame may keep most of what it carried; a
cell next to a large occluder may lose some although none of its pixels is
covered. ``1 - damage`` is a visibility that says what still counts for
matching, an alternative (or a factor) to the pixel mask as the occlusion head's
target (``train_cfg.occ_target`` of ``OAMLRecognizer``; docs/models.md,
"Feature-damage target").

* :func:`paste_occluders`: composite the occluder of one image onto another face;
* :func:`damage_visibility`: per-cell ``1 - damage`` in [0, 1] from the two maps.
"""
from typing import Optional

import torch
import torch.nn.functional as F

from oaml_mm.errors import ConfigError
from .visibility import resize_visibility

__all__ = ['paste_occluders', 'damage_visibility']


def paste_occluders(faces: torch.Tensor, occluded: torch.Tensor,
                    visibility: torch.Tensor) -> torch.Tensor:
    """Paste the occluded pixels of ``occluded`` onto ``faces``.

    ``out = v * faces + (1 - v) * occluded`` with ``v`` the visibility of
    ``occluded`` brought onto the image grid (nearest up): where the occluder
    covers a pixel (v = 0) it replaces the face, elsewhere the face stays. Aligned
    faces share their geometry, so the occluder lands where it would sit on this
    face. Masks coarser than the image give block-shaped occluders: pass
    pixel-level masks (``PackFaceInputs(grid=(112, 112))``) for exact ones.

    Args:
        faces (Tensor): [N, 3, H, W] images (any normalisation, the same as
            ``occluded``).
        occluded (Tensor): [N, 3, H, W] images with an occluder.
        visibility (Tensor): [N, 1, h, w] visibility of ``occluded`` in [0, 1].

    Returns:
        Tensor: [N, 3, H, W] composites.

    Raises:
        ConfigError: Shapes disagree.

    Examples:
        >>> faces, occ = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
        >>> paste_occluders(faces, occ, torch.tensor([[[[1., 0.], [1., 1.]]]]))[0, 0]
        tensor([[0., 1.],
                [0., 0.]])
    """
    if faces.shape != occluded.shape or faces.dim() != 4 or \
            visibility.dim() != 4 or visibility.shape[0] != faces.shape[0] or \
            visibility.shape[1] != 1:
        raise ConfigError(
            f'paste_occluders: faces {tuple(faces.shape)} and occluded '
            f'{tuple(occluded.shape)} must both be [N, 3, H, W] and visibility '
            f'[N, 1, h, w], got {tuple(visibility.shape)}')
    h, w = faces.shape[-2:]
    v = visibility.to(faces.dtype)
    if v.shape[-2:] != (h, w):
        v = F.interpolate(v, size=(h, w), mode='nearest')
    return v * faces + (1.0 - v) * occluded


def damage_visibility(clean_maps: torch.Tensor,
                      occluded_maps: torch.Tensor,
                      visibility: Optional[torch.Tensor] = None,
                      scale: Optional[float] = None,
                      covered: float = 0.05,
                      min_scale: float = 0.05) -> torch.Tensor:
    """``1 - damage`` per cell: how much of its features an occluder left intact.

    The damage of a cell is the cosine distance ``d = 1 - cos(f_clean, f_occ)``
    between its feature vectors on the clean and the occluded face (in [0, 2];
    the metric QAConv matches with), divided by a scale and clipped:
    ``clip(1 - d / scale, 0, 1)``. The scale is ``scale`` when given, else the
    mean damage of the cells the occluder covers fully (true ``visibility`` <=
    ``covered``) over the batch, so that a fully covered cell reads as
    invisible; without such cells (or without ``visibility``) the largest
    damage of the batch; never below ``min_scale``, so that rounding noise on
    a face nothing moved is not stretched into damage.

    Args:
        clean_maps (Tensor): [N, C, h, w] feature maps of the clean faces.
        occluded_maps (Tensor): [N, C, h, w] maps of the same faces occluded.
        visibility (Tensor, optional): True visibility of the occluded faces
            [N, 1, h', w'] (brought onto h x w), for the scale.
        scale (float, optional): Damage that counts as total, > 0.
        covered (float): Visibility at or below which a cell is fully covered.
            Defaults to 0.05.
        min_scale (float): Lower bound of the derived scale (cosine distance).
            Defaults to 0.05.

    Returns:
        Tensor: [N, 1, h, w] in [0, 1] (1 = features intact), fp32; all ones
        when nothing moved.

    Raises:
        ConfigError: Shapes differ, or ``scale <= 0``.

    Examples:
        >>> a = torch.tensor([[[[1., 1.]], [[0., 0.]]]])   # [1, 2, 1, 2]
        >>> b = torch.tensor([[[[1., 0.]], [[0., 1.]]]])   # second cell turned 90 deg
        >>> damage_visibility(a, b, scale=2.0)[0, 0]
        tensor([[1.0000, 0.5000]])
    """
    if clean_maps.shape != occluded_maps.shape or clean_maps.dim() != 4:
        raise ConfigError(
            f'damage_visibility: clean {tuple(clean_maps.shape)} and occluded '
            f'{tuple(occluded_maps.shape)} maps must be the same [N, C, h, w]')
    if scale is not None and scale <= 0:
        raise ConfigError(f'damage_visibility: scale must be > 0, got {scale}')
    cos = F.cosine_similarity(clean_maps.float(), occluded_maps.float(), dim=1,
                              eps=1e-8)
    damage = (1.0 - cos).clamp_min(0.0).unsqueeze(1)  # [N, 1, h, w]
    if scale is None:
        ref = None
        if visibility is not None:
            vis = visibility.float().to(damage.device)
            if vis.shape[-2:] != damage.shape[-2:]:
                vis = resize_visibility(vis, damage.shape[-1])
            full = vis <= covered
            if bool(full.any()):
                ref = damage[full].mean()
        if ref is None:
            ref = damage.max()
        scale_t = ref.clamp_min(min_scale)
    else:
        scale_t = torch.tensor(float(scale), device=damage.device)
    return (1.0 - damage / scale_t).clamp(0.0, 1.0)
