"""AdaFace's training augmentation: crop, low resolution and photometric jitter.

Kim et al., "AdaFace: Quality Adaptive Margin for Face Recognition", CVPR 2022, trains
on images degraded with three independent augmentations so that the feature norm learns
image quality (docs/datasets.md): a RandomResizedCrop region pasted back at its place on
a zero canvas, a down-and-up resize with random interpolations, and brightness /
contrast / saturation jitter.
"""
import math
from typing import Sequence, Tuple

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from oaml_mm.registry import TRANSFORMS

__all__ = [
    'FaceAugmenter', 'random_resized_crop_params', 'low_res', 'color_jitter'
]

_INTERPOLATIONS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_AREA,
                   cv2.INTER_CUBIC, cv2.INTER_LANCZOS4)


def random_resized_crop_params(
        height: int, width: int, scale: Tuple[float, float],
        ratio: Tuple[float, float],
        rng: np.random.RandomState) -> Tuple[int, int, int, int]:
    """RandomResizedCrop's region sampling: ``(top, left, h, w)``.

    Ten tries of an area fraction in ``scale`` and a log-uniform aspect ratio in
    ``ratio``; falls back to the whole image clipped to ``ratio``.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.randint(0, height - h + 1))
            left = int(rng.randint(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def low_res(img: np.ndarray, side_ratio: float, down: int,
            up: int) -> np.ndarray:
    """Resize to ``side_ratio`` of the side and back with the given interpolations."""
    h, w = img.shape[:2]
    small = max(1, int(side_ratio * h))
    small_img = cv2.resize(img, (small, small), interpolation=down)
    return cv2.resize(small_img, (w, h), interpolation=up)


def color_jitter(img: np.ndarray, brightness: float, contrast: float,
                 saturation: float, order: Sequence[int]) -> np.ndarray:
    """Apply brightness, contrast and saturation factors in ``order`` (0, 1, 2).

    Each factor blends with a degenerate image as torchvision's ColorJitter does:
    black for brightness, the mean grey level for contrast, the grey image for
    saturation.
    """
    out = img.astype(np.float32)
    for op in order:
        if op == 0:
            out = out * brightness
        elif op == 1:
            grey = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8),
                                cv2.COLOR_RGB2GRAY).mean()
            out = out * contrast + grey * (1 - contrast)
        else:
            grey = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8),
                                cv2.COLOR_RGB2GRAY).astype(np.float32)
            out = out * saturation + grey[..., None] * (1 - saturation)
        out = np.clip(out, 0, 255)
    return out.astype(np.uint8)


@TRANSFORMS.register_module()
class FaceAugmenter(BaseTransform):
    """AdaFace crop / low-resolution / photometric augmentation, each with its own p.

    The zeroed area of the crop augmentation also becomes not visible in
    ``visibility_mask`` when the sample has one (or when ``crop_hides=True``, one is
    created), since no face evidence is left there.

    Examples:
        >>> pipeline = [dict(type='FaceAugmenter', crop_prob=0.2, low_res_prob=0.2,
        ...                  photometric_prob=0.2),
        ...             dict(type='FaceRandomFlip'), dict(type='PackFaceInputs')]

    Args:
        crop_prob (float): Probability of the crop augmentation. Defaults to 0.2.
        low_res_prob (float): Probability of the low-resolution one. Defaults to 0.2.
        photometric_prob (float): Probability of the colour jitter. Defaults to 0.2.
        crop_scale (tuple): Area fraction range. Defaults to (0.2, 1.0).
        crop_ratio (tuple): Aspect ratio range. Defaults to (3/4, 4/3).
        low_res_range (tuple): Side ratio range. Defaults to (0.2, 1.0).
        jitter (float): Brightness/contrast/saturation strength. Defaults to 0.5.
        crop_hides (bool): Create a visibility mask for the zeroed area even if the
            sample had none. Defaults to False (the main stream's targets stay
            all-ones, as in AdaFace).
    """

    def __init__(self,
                 crop_prob: float = 0.2,
                 low_res_prob: float = 0.2,
                 photometric_prob: float = 0.2,
                 crop_scale: Tuple[float, float] = (0.2, 1.0),
                 crop_ratio: Tuple[float, float] = (3 / 4, 4 / 3),
                 low_res_range: Tuple[float, float] = (0.2, 1.0),
                 jitter: float = 0.5,
                 crop_hides: bool = False) -> None:
        self.crop_prob = crop_prob
        self.low_res_prob = low_res_prob
        self.photometric_prob = photometric_prob
        self.crop_scale = tuple(crop_scale)
        self.crop_ratio = tuple(crop_ratio)
        self.low_res_range = tuple(low_res_range)
        self.jitter = jitter
        self.crop_hides = crop_hides

    def transform(self, results: dict) -> dict:
        rng = np.random
        img = results['img']
        h, w = img.shape[:2]
        if rng.rand() < self.crop_prob:
            top, left, ch, cw = random_resized_crop_params(
                h, w, self.crop_scale, self.crop_ratio, rng)
            canvas = np.zeros_like(img)
            canvas[top:top + ch, left:left + cw] = img[top:top + ch,
                                                       left:left + cw]
            img = canvas
            keep = np.zeros((h, w), np.float32)
            keep[top:top + ch, left:left + cw] = 1.0
            if results.get('visibility_mask') is not None:
                results['visibility_mask'] = results['visibility_mask'] * keep
            elif self.crop_hides:
                results['visibility_mask'] = keep
            results['crop_ratio'] = min(ch, cw) / max(h, w)
        if rng.rand() < self.low_res_prob:
            ratio = rng.uniform(*self.low_res_range)
            down = _INTERPOLATIONS[rng.randint(len(_INTERPOLATIONS))]
            up = _INTERPOLATIONS[rng.randint(len(_INTERPOLATIONS))]
            img = low_res(img, ratio, down, up)
            results['low_res_ratio'] = float(ratio)
        if rng.rand() < self.photometric_prob:
            j = self.jitter
            factors = rng.uniform(max(0.0, 1 - j), 1 + j, size=3)
            img = color_jitter(img, factors[0], factors[1], factors[2],
                               rng.permutation(3))
        results['img'] = img
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(crop_prob={self.crop_prob}, '
                f'low_res_prob={self.low_res_prob}, '
                f'photometric_prob={self.photometric_prob})')
