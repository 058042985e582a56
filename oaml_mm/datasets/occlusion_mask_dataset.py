"""Occluded faces with ground-truth visibility masks (OAML's occlusion stream).

The seed report trains its OcclusionHead on niqab-style occluded faces whose visible
pixels are marked by hand; no standard file format exists, so oaml_mm defines one::

    <data_root>/
      images/<name>.png|.jpg|.jpeg|.bmp   the aligned face (any size, RGB or grey)
      masks/<name>.png                    single channel, same height and width as the
                                          image; 255 = visible, 0 = occluded (values in
                                          between are partial visibility)
      labels.txt                          optional: "<name> <identity>" per line; also
                                          fixes the order and the subset of samples

``<name>`` may contain sub-folders (``id_0007/003``). Without ``labels.txt`` the images
folder is scanned once (sorted) and samples carry no identity label.
"""
import os
import os.path as osp

import cv2
import numpy as np

__all__ = ['write_occlusion_mask_sample']


def write_occlusion_mask_sample(root: str, name: str, image_rgb: np.ndarray,
                                visibility_mask: np.ndarray,
                                ext: str = '.png') -> str:
    """Write one image and its visibility mask in the layout above.

    Args:
        root (str): Data set folder.
        name (str): Sample name without extension (may contain ``/``).
        image_rgb (np.ndarray): uint8 [H,W,3] RGB (or [H,W] grey).
        visibility_mask (np.ndarray): [H,W], float in [0,1] or uint8 in [0,255];
            1 / 255 = visible.
        ext (str): Image extension, ``.png`` (lossless, default) or ``.jpg``.

    Returns:
        str: The image path written.

    Raises:
        ValueError: The mask does not have the image's height and width.
    """
    image_rgb = np.asarray(image_rgb)
    mask = np.asarray(visibility_mask)
    if mask.shape[:2] != image_rgb.shape[:2] or mask.ndim != 2:
        raise ValueError(f'mask shape {mask.shape} does not match image '
                         f'{image_rgb.shape[:2]}; expected a [H,W] mask')
    if mask.dtype != np.uint8:
        mask = np.clip(np.rint(mask.astype(np.float32) * 255), 0,
                       255).astype(np.uint8)
    img_path = osp.join(root, 'images', name + ext)
    mask_path = osp.join(root, 'masks', name + '.png')
    os.makedirs(osp.dirname(img_path), exist_ok=True)
    os.makedirs(osp.dirname(mask_path), exist_ok=True)
    img = image_rgb if image_rgb.ndim == 2 else cv2.cvtColor(
        image_rgb, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(img_path, img):
        raise OSError(f'{img_path}: cannot write image')
    if not cv2.imwrite(mask_path, mask):
        raise OSError(f'{mask_path}: cannot write mask')
    return img_path
