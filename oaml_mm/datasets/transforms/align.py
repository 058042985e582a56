"""Five-point face alignment to the ArcFace 112x112 template.

The template is MTCNN's 96x112 reference shifted by 8 px on x (insightface
``face_align.arcface_dst``; docs/datasets.md); the similarity transform is the
least-squares one of Umeyama, "Least-squares estimation of transformation parameters
between two point patterns", TPAMI 1991, restricted to rotation, uniform scale and
translation.
"""
from typing import Sequence, Tuple

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from oaml_mm.errors import DataFormatError
from oaml_mm.registry import TRANSFORMS

__all__ = [
    'AlignFace5Points', 'ARCFACE_REF_POINTS', 'similarity_transform',
    'landmarks_plausible', 'landmark_layout_mistake', 'LANDMARK_ORDER'
]

ARCFACE_REF_POINTS = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
"""Left eye, right eye, nose tip, left and right mouth corner in a 112x112 crop."""

#: How five landmarks are expected, for messages.
LANDMARK_ORDER = ('(x, y) pairs x1 y1 x2 y2 ... x5 y5 in the order left eye, '
                  'right eye, nose tip, left mouth corner, right mouth corner '
                  '(left and right as seen in the image)')

_IOD = float(np.linalg.norm(ARCFACE_REF_POINTS[1] - ARCFACE_REF_POINTS[0]))


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


def landmarks_plausible(landmarks: np.ndarray,
                        tolerance: float = 0.4) -> Tuple[bool, str]:
    """Whether the nose and mouth points sit where a face has them.

    In the frame that the eyes alone align to the template, each of the nose and
    mouth points must lie within ``tolerance`` inter-ocular distances of its
    template position, the nose below the eyes and the mouth below the nose. A
    detector guesses these points under a niqab, a mask or a hand, and its guesses
    fail this test far more often than real points on turned faces do
    (docs/inference.md, "Occluded faces"). The same test checks landmarks given
    by users and files (:func:`landmark_layout_mistake`).

    Args:
        landmarks (np.ndarray): [5, 2] in the ArcFace template's order.
        tolerance (float): In inter-ocular distances. Defaults to 0.4: the
            broad smile of ``skimage.data.astronaut()`` puts its mouth corners
            0.28 away, while the gross misplacements that occluders cause lie
            beyond (docs/inference.md, "Occluded faces").

    Returns:
        tuple: ``(ok, reason)``, reason empty when ok.
    """
    lmk = np.asarray(landmarks, np.float64).reshape(5, 2)
    if np.linalg.norm(lmk[1] - lmk[0]) < 1.0:
        return False, 'eyes coincide'
    M = similarity_transform(lmk[:2], ARCFACE_REF_POINTS[:2])
    p = lmk @ M[:, :2].T + M[:, 2]
    dist = np.linalg.norm(p[2:] - ARCFACE_REF_POINTS[2:], axis=1) / _IOD
    names = ('nose', 'left mouth corner', 'right mouth corner')
    far = [f'{n} {d:.2f}' for n, d in zip(names, dist) if d > tolerance]
    if far:
        return False, 'off the template by ' + ', '.join(far) + ' eye distances'
    if not p[2, 1] > p[:2, 1].max() or not p[3:, 1].min() > p[2, 1]:
        return False, 'eyes, nose and mouth are not in top-down order'
    return True, ''


def _other_layouts(lmk: np.ndarray):
    flat = lmk.reshape(-1)
    yield 'all x then all y (x1 ... x5 y1 ... y5)', np.stack([flat[:5],
                                                              flat[5:]], 1)
    yield '(y, x) pairs instead of (x, y)', lmk[:, ::-1]
    yield 'left and right swapped (eyes and mouth corners)', lmk[[1, 0, 2, 4, 3]]
    yield 'the two eyes swapped', lmk[[1, 0, 2, 3, 4]]
    yield 'the two mouth corners swapped', lmk[[0, 1, 2, 4, 3]]


def landmark_layout_mistake(landmarks: np.ndarray,
                            tolerance: float = 0.4) -> str:
    """The likely layout mistake of five given landmarks, or ``''``.

    Landmarks that fail :func:`landmarks_plausible` but pass it once read in
    another common layout (all x then all y, (y, x) pairs, left and right
    swapped) were almost surely written in that layout: aligning them as given
    makes a garbage crop that still gets a confident score.

    Args:
        landmarks (np.ndarray): [5, 2] as given.
        tolerance (float): Of :func:`landmarks_plausible`. Defaults to 0.4.

    Returns:
        str: The mistake (e.g. ``'the two eyes swapped'``), ``''`` when the
        landmarks are plausible as given or in no other layout either.

    Examples:
        >>> landmark_layout_mistake(ARCFACE_REF_POINTS)
        ''
        >>> landmark_layout_mistake(ARCFACE_REF_POINTS[[1, 0, 2, 3, 4]])
        'the two eyes swapped'
    """
    lmk = np.asarray(landmarks, np.float64).reshape(5, 2)
    if landmarks_plausible(lmk, tolerance)[0]:
        return ''
    fits = [(mistake, fixed) for mistake, fixed in _other_layouts(lmk)
            if landmarks_plausible(fixed, tolerance)[0]]
    if not fits:
        return ''
    # A mirrored face read as (y, x) is a rotated face, which passes too: of
    # the readings that pass, the one with the most upright eye line wins.

    def upright(fit) -> float:
        eye = fit[1][1] - fit[1][0]
        return float(eye[0] / np.linalg.norm(eye))
    return max(fits, key=upright)[0]


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
