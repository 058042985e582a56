"""Horizontal flip that keeps the visibility mask and landmarks on the pixels.

mmpretrain's ``RandomFlip`` flips only images; OAML's occlusion target must flip with
its face, and the left/right landmarks must swap so that alignment and mask placement
stay valid.
"""
import numpy as np
from mmcv.transforms import BaseTransform

from oaml_mm.registry import TRANSFORMS

__all__ = ['FaceRandomFlip']

# Left eye <-> right eye, nose stays, left mouth corner <-> right mouth corner.
_FLIP_ORDER = [1, 0, 2, 4, 3]


@TRANSFORMS.register_module()
class FaceRandomFlip(BaseTransform):
    """Flip ``img``, ``visibility_mask`` and ``landmarks`` left-right with ``prob``.

    Sets ``results['flip']``.

    Examples:
        >>> pipeline = [dict(type='FaceRandomFlip', prob=0.5),
        ...             dict(type='PackFaceInputs')]

    Args:
        prob (float): Flip probability. Defaults to 0.5.
    """

    def __init__(self, prob: float = 0.5) -> None:
        self.prob = float(prob)

    def transform(self, results: dict) -> dict:
        flip = bool(np.random.rand() < self.prob)
        results['flip'] = flip
        if not flip:
            return results
        img = results['img']
        results['img'] = np.ascontiguousarray(img[:, ::-1])
        if results.get('visibility_mask') is not None:
            results['visibility_mask'] = np.ascontiguousarray(
                results['visibility_mask'][:, ::-1])
        lmk = results.get('landmarks')
        if lmk is not None:
            lmk = np.asarray(lmk, np.float32).reshape(-1, 2).copy()
            lmk[:, 0] = img.shape[1] - 1 - lmk[:, 0]
            if len(lmk) == 5:
                lmk = lmk[_FLIP_ORDER]
            results['landmarks'] = lmk
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(prob={self.prob})'
