"""Packing a face sample into the ``inputs`` / ``DataSample`` pair of the model.

The contract is the one of ``docs/architecture.md``: ``inputs`` is a uint8 [3,H,W]
tensor in the RGB order images are decoded in (channel order for the weights is the
data preprocessor's job), and the ``DataSample`` carries ``gt_label``, the [1,7,7]
``gt_visibility`` target of the OcclusionHead (OAML, docs/models.md) and the metainfo.
"""
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmpretrain.structures import DataSample

from oaml_mm.registry import TRANSFORMS

__all__ = ['PackFaceInputs', 'visibility_to_grid', 'DEFAULT_GRID']

DEFAULT_META_KEYS = ('sample_idx', 'img_path', 'key', 'dataset_name',
                     'pair_index', 'pair_slot', 'issame', 'template_id',
                     'media_id', 'faceness', 'flip', 'occlusion_type',
                     'ori_shape', 'img_shape')


#: Side of the visibility grid where no model gives it: the IR backbone's maps
#: of a 112x112 face (112 / 16). Models take theirs from ``backbone.map_size``.
DEFAULT_GRID = 7


def visibility_to_grid(mask: np.ndarray,
                       grid: Tuple[int, int] = (DEFAULT_GRID, DEFAULT_GRID)
                       ) -> np.ndarray:
    """Area-average a full-resolution visibility mask onto the feature-map grid.

    Each cell gets the visible fraction of the pixels it covers, which is what the
    OcclusionHead regresses (MSE against the 7x7 map of a 112x112 face).

    Args:
        mask (np.ndarray): [H,W] in [0,1], 1 = visible.
        grid (tuple[int, int]): ``(rows, cols)``. Defaults to
            (:data:`DEFAULT_GRID`, :data:`DEFAULT_GRID`).

    Returns:
        np.ndarray: float32 [rows, cols] in [0,1].

    Examples:
        >>> m = np.ones((112, 112), np.float32); m[56:] = 0
        >>> visibility_to_grid(m)[:, 0].round(2).tolist()
        [1.0, 1.0, 1.0, 0.5, 0.0, 0.0, 0.0]
    """
    mask = np.asarray(mask, np.float32)
    out = cv2.resize(mask, (int(grid[1]), int(grid[0])),
                     interpolation=cv2.INTER_AREA)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


@TRANSFORMS.register_module()
class PackFaceInputs(BaseTransform):
    """Pack ``img``, ``gt_label``, ``visibility_mask`` and metainfo for the model.

    Required keys: ``img`` (uint8 [H,W,3] RGB). Optional: ``gt_label``,
    ``visibility_mask`` ([H,W], 1 = visible; downsampled by area to ``grid``), and
    the metainfo keys.

    Examples:
        >>> pipeline = [dict(type='FaceRandomFlip'), dict(type='PackFaceInputs')]

    Args:
        default_visibility (float, optional): Value of ``gt_visibility`` when the
            sample has no mask (clean faces are fully visible). ``None`` leaves the
            field unset. Defaults to 1.0.
        grid (Sequence[int]): Visibility grid ``(rows, cols)``. Defaults to
            (7, 7) (:data:`DEFAULT_GRID`: a pipeline has no model); set it to
            the model's map side (``backbone.map_size``: 4 for 64x64 faces) so
            the true masks are exact area averages on its grid. A mask on
            another grid still works: the model resizes it
            (``resize_visibility``).
        meta_keys (Sequence[str]): Results keys copied into the metainfo.
    """

    def __init__(self,
                 default_visibility: Optional[float] = 1.0,
                 grid: Sequence[int] = (DEFAULT_GRID, DEFAULT_GRID),
                 meta_keys: Sequence[str] = DEFAULT_META_KEYS) -> None:
        self.default_visibility = default_visibility
        self.grid = (int(grid[0]), int(grid[1]))
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        img = np.asarray(results['img'])
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        inputs = torch.from_numpy(
            np.ascontiguousarray(img.transpose(2, 0, 1))).to(torch.uint8)
        sample = DataSample()
        if results.get('gt_label') is not None:
            sample.set_gt_label(int(results['gt_label']))
        mask = results.get('visibility_mask')
        if mask is not None:
            vis = torch.from_numpy(visibility_to_grid(mask, self.grid))[None]
            sample.set_field(vis, 'gt_visibility')
        elif self.default_visibility is not None:
            sample.set_field(
                torch.full((1, ) + self.grid, float(self.default_visibility)),
                'gt_visibility')
        meta = {}
        for k in self.meta_keys:
            if k in results:
                v = results[k]
                meta[k] = v.item() if isinstance(v, np.generic) else v
        sample.set_metainfo(meta)
        return dict(inputs=inputs, data_samples=sample)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(default_visibility='
                f'{self.default_visibility}, grid={self.grid})')
