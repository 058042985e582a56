"""Five-point face alignment to the ArcFace 112x112 template.

The template is MTCNN's 96x112 reference shifted by 8 px on x (insightface
``face_align.arcface_dst``; docs/datasets.md); the similarity transform is the
least-squares one of Umeyama, "Least-squares estimation of transformation parameters
between two point patterns", TPAMI 1991, restricted to rotation, uniform scale and
translation.
"""
from typing import Sequence

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from oaml_mm.errors import DataFormatError
from oaml_mm.registry import TRANSFORMS

__all__ = ['AlignFace5Points', 'ARCFACE_REF_POINTS', 'similarity_transform']

ARCFACE_REF_POINTS = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
"""Left eye, right eye, nose tip, left and right mouth corner in a 112x112 crop."""


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform mapping ``src`` points onto ``dst``.

    Args:
        src (np.ndarray): [N,2] points.
        dst (np.ndarray): [N,2] points.

    Returns:
        np.ndarray: float64 [2,3] affine matrix for :func:`cv2.warpAffine`.

    Examples:
        >>> M = similarity_transform(ARCFACE_REF_POINTS * 2 + 5, ARCFACE_REF_POINTS)
        >>> np.allclose(M, [[0.5, 0, -2.5], [0, 0.5, -2.5]], atol=1e-5)
        True
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = (s_c ** 2).sum() / len(src)
    cov = d_c.T @ s_c / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = (d * np.diag(sign)).sum() / var_s if var_s > 0 else 1.0
    M = np.zeros((2, 3))
    M[:, :2] = scale * rot
    M[:, 2] = mu_d - scale * rot @ mu_s
    return M


@TRANSFORMS.register_module()
class AlignFace5Points(BaseTransform):
    """Warp ``img`` so its ``landmarks`` ([5,2]) land on the ArcFace template.

    The landmarks are replaced by their aligned positions; a ``visibility_mask`` is
    warped with the image (outside the source counts as not visible).

    Examples:
        >>> pipeline = [dict(type='AlignFace5Points'), dict(type='PackFaceInputs')]

    Args:
        image_size (Sequence[int]): Output ``(height, width)``; the template is
            scaled by ``width / 112``. Defaults to (112, 112).
    """

    def __init__(self, image_size: Sequence[int] = (112, 112)) -> None:
        self.image_size = (int(image_size[0]), int(image_size[1]))

    def transform(self, results: dict) -> dict:
        lmk = results.get('landmarks')
        if lmk is None:
            raise DataFormatError(
                results.get('img_path', '<sample>'), 'no 5-point landmarks to '
                'align with', record=results.get('key'), field='landmarks')
        lmk = np.asarray(lmk, np.float32).reshape(-1, 2)
        if lmk.shape != (5, 2) or not np.isfinite(lmk).all():
            raise DataFormatError(
                results.get('img_path', '<sample>'), f'landmarks of shape '
                f'{lmk.shape} (expected 5 finite (x, y) points)',
                record=results.get('key'), field='landmarks')
        h, w = self.image_size
        dst = ARCFACE_REF_POINTS * (w / 112.0)
        M = similarity_transform(lmk, dst)
        results['img'] = cv2.warpAffine(
            results['img'], M, (w, h), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if results.get('visibility_mask') is not None:
            results['visibility_mask'] = cv2.warpAffine(
                results['visibility_mask'].astype(np.float32), M, (w, h),
                flags=cv2.INTER_LINEAR, borderValue=0)
        results['landmarks'] = (lmk @ M[:, :2].T + M[:, 2]).astype(np.float32)
        results['img_shape'] = (h, w)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(image_size={self.image_size})'
