"""The visibility grid: OAML's central datum, and its one home (torch side).

A visibility map says, per cell of the backbone's feature map, which fraction of the
face under it is visible (1 = visible). The data layer writes it as the area average of
a full-resolution mask (``oaml_mm.datasets.transforms.visibility_to_grid``, the numpy
side); the occlusion head predicts it; QAConv weights its correlations with it. The
grid side is the backbone's map side (7 for IR stage 4, 14 with ``map_stage=3``):
everything here takes it as an argument, none assumes 7.

* :func:`resize_visibility`: bring maps onto another grid (nearest up, area down);
* :func:`calibrate_visibility` / :func:`check_vis_range`: stretch a predicted map;
* :func:`stack_gt_visibility`: the true maps of a batch, on the model's grid.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from oaml_mm.errors import ConfigError, DataFormatError

__all__ = [
    'resize_visibility', 'calibrate_visibility', 'check_vis_range',
    'stack_gt_visibility'
]


def resize_visibility(vis: Optional[torch.Tensor],
                      size: int) -> Optional[torch.Tensor]:
    """Bring visibility maps onto a ``size x size`` grid.

    A finer grid copies each cell onto the cells it covers (nearest), so a 7x7 true
    mask can weight QAConv on 14x14 maps; a coarser grid averages the cells each new
    cell covers (exact for the area averages the data layer writes), so a 14x14
    prediction can be scored against 7x7 true masks.

    Args:
        vis (Tensor, optional): [N, 1, h, w] or [N, h, w]. None passes through.
        size (int): Side of the output grid.

    Returns:
        Tensor or None: [N, 1, size, size] (or [N, size, size]), dtype kept.

    Raises:
        ConfigError: ``vis`` is neither [N, 1, h, w] nor [N, h, w].

    Examples:
        >>> resize_visibility(torch.tensor([[[[1., 0.], [0., 0.]]]]), 4)[0, 0, 0]
        tensor([1., 1., 0., 0.])
    """
    if vis is None:
        return vis
    if vis.dim() not in (3, 4) or vis.dim() == 4 and vis.shape[1] != 1:
        raise ConfigError(
            f'resize_visibility: expected [N, 1, h, w] or [N, h, w], got '
            f'{tuple(vis.shape)}')
    if vis.shape[-1] == size and vis.shape[-2] == size:
        return vis
    squeeze = vis.dim() == 3
    v = vis.unsqueeze(1) if squeeze else vis
    if size > v.shape[-1]:
        out = F.interpolate(v.float(), size=(size, size), mode='nearest')
    else:
        out = F.adaptive_avg_pool2d(v.float(), size)
    out = out.to(vis.dtype)
    return out.squeeze(1) if squeeze else out


def calibrate_visibility(vis: Optional[torch.Tensor],
                         vis_range: Optional[Tuple[float, float]]
                         ) -> Optional[torch.Tensor]:
    """Stretch visibility so that ``vis_range`` maps linearly onto [0, 1].

    ``clip((vis - low) / (high - low), 0, 1)``: cells the occlusion head is fairly
    sure of become exactly visible (1) or exactly occluded (0). A regressed map is
    rarely exactly 1 on a clean face (SynthFace demo: mean error 0.07 on clean
    faces), and any shortfall reweights or gates cells that should count fully;
    the stretch makes the matching of clean faces identical to the unweighted one.

    Args:
        vis (Tensor, optional): Visibility in [0, 1], any shape. None passes
            through.
        vis_range (tuple, optional): ``(low, high)`` with ``0 <= low < high <= 1``.
            None returns ``vis`` unchanged (the seed's behaviour).

    Returns:
        Tensor or None: Same shape and dtype as ``vis``.

    Examples:
        >>> calibrate_visibility(torch.tensor([0.1, 0.5, 0.9]), (0.3, 0.7))
        tensor([0.0000, 0.5000, 1.0000])
    """
    if vis is None or vis_range is None:
        return vis
    low, high = float(vis_range[0]), float(vis_range[1])
    return ((vis - low) / (high - low)).clamp(0.0, 1.0)


def check_vis_range(vis_range) -> Optional[Tuple[float, float]]:
    """Validate a ``vis_range`` config value; returns it as a float tuple or None."""
    if vis_range is None:
        return None
    try:
        low, high = (float(v) for v in vis_range)
    except (TypeError, ValueError):
        raise ConfigError(
            f'QAConv: vis_range must be None or (low, high), got {vis_range!r}')
    if not 0.0 <= low < high <= 1.0:
        raise ConfigError(
            f'QAConv: vis_range {vis_range!r} needs 0 <= low < high <= 1')
    return low, high


def stack_gt_visibility(data_samples: Optional[Sequence],
                        size: Optional[int] = None) -> Optional[torch.Tensor]:
    """Stack the ``gt_visibility`` of data samples into [B, 1, h, w].

    Args:
        data_samples (list[DataSample], optional): Samples; each may carry
            ``gt_visibility`` [1, h, w] (or [h, w]).
        size (int, optional): Bring the masks onto ``size x size`` cells
            (:func:`resize_visibility`; the recognizer passes its maps' side, so
            the grid follows the backbone).

    Returns:
        Tensor | None: The stacked masks (fp32), or None when no sample has one.

    Raises:
        DataFormatError: Only some samples carry a mask, or shapes differ.
    """
    if not data_samples:
        return None
    have = [('gt_visibility' in s) for s in data_samples]
    if not any(have):
        return None
    if not all(have):
        missing = [i for i, h in enumerate(have) if not h]
        raise DataFormatError(
            '<batch>', 'some samples carry gt_visibility and others do not; '
            'clean faces must carry an all-ones mask', record=missing[0],
            field='gt_visibility')
    masks = []
    for i, s in enumerate(data_samples):
        m = torch.as_tensor(s.gt_visibility).float()
        if m.dim() == 2:
            m = m.unsqueeze(0)
        if m.dim() != 3 or m.shape[0] != 1:
            raise DataFormatError(
                '<batch>', f'expected a [1, h, w] mask, got {tuple(m.shape)}',
                record=i, field='gt_visibility')
        masks.append(m if size is None else resize_visibility(m[None], size)[0])
    shapes = {tuple(m.shape) for m in masks}
    if len(shapes) > 1:
        raise DataFormatError('<batch>', f'gt_visibility shapes differ: {shapes}',
                              field='gt_visibility')
    return torch.stack(masks)
