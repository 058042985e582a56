"""Contact sheets of a data set's samples as the model sees them: image, mask, label.

Like mmpretrain's ``browse_dataset``: every tile is one sample after the data set's
pipeline (augmentations included), tinted by its true visibility map when it has one
(:func:`~oaml_mm.visualization.face_pair.visibility_overlay`: red = occluded) and
captioned with its label and occlusion type.
"""
from typing import Optional, Sequence

import cv2
import numpy as np

from .face_pair import visibility_overlay

__all__ = ['dataset_contact_sheet']


def dataset_contact_sheet(dataset, indices: Sequence[int], cols: int = 8,
                          tile: int = 112, show_mask: bool = True,
                          caption: bool = True) -> np.ndarray:
    """One RGB uint8 picture of the samples ``indices``, ``cols`` per row.

    Args:
        dataset: A data set whose pipeline ends in ``PackFaceInputs``.
        indices (Sequence[int]): Samples to draw, in order.
        cols (int): Tiles per row. Defaults to 8.
        tile (int): Tile side in pixels. Defaults to 112.
        show_mask (bool): Tint by ``gt_visibility`` when the sample has a
            non-trivial one. Defaults to True.
        caption (bool): Write ``label`` / ``occlusion_type`` under each tile.

    Returns:
        np.ndarray: [rows * (tile + caption height), cols * tile, 3].
    """
    cap_h = 14 if caption else 0
    indices = list(indices)
    rows = max(1, -(-len(indices) // cols))
    sheet = np.full((rows * (tile + cap_h), cols * tile, 3), 255, np.uint8)
    for n, i in enumerate(indices):
        item = dataset[int(i)]
        s = item['data_samples']
        img = np.ascontiguousarray(item['inputs'].permute(1, 2, 0).numpy())
        img = cv2.resize(img, (tile, tile))
        vis: Optional[np.ndarray] = None
        if show_mask and 'gt_visibility' in s:
            vis = s.gt_visibility.float().numpy()
            if vis.min() < 1:
                img = visibility_overlay(img, vis)
        r, c = divmod(n, cols)
        y, x = r * (tile + cap_h), c * tile
        sheet[y:y + tile, x:x + tile] = img
        if caption:
            label = int(s.gt_label.reshape(-1)[0]) if 'gt_label' in s else '-'
            text = f'{label} {s.get("occlusion_type", "")}'.strip()[:18]
            cv2.putText(sheet, text, (x + 2, y + tile + cap_h - 3),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1,
                        cv2.LINE_AA)
    return sheet
