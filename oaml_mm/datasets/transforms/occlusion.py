"""Synthetic occlusions that record the ground-truth visibility they leave.

OAML (docs/models.md) supervises its OcclusionHead with the visibility of each face
cell; synthetic occluders give that target for free. ``MedicalMaskOcclusion`` follows
the placement rule of docs/datasets.md (nose and mouth-corner reference points of the
aligned face, jitter, shift, scale, rotation), with a mask template the project draws
itself (:func:`draw_medical_mask_template`, shipped as
``oaml_mm/assets/medical_mask.png``). It multiplies what it covers into
``results['visibility_mask']`` (float32 [H,W], 1 = visible), as ``RandomOcclusion``
(random_occlusion.py) does.
"""
import os.path as osp
from typing import Optional, Tuple

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from oaml_mm.errors import DataFormatError, MissingFileError
from oaml_mm.registry import TRANSFORMS
from .align import ARCFACE_REF_POINTS

__all__ = [
    'MedicalMaskOcclusion', 'draw_medical_mask_template',
    'composite_rgba', 'DEFAULT_MASK_TEMPLATE'
]

DEFAULT_MASK_TEMPLATE = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'assets',
    'medical_mask.png')


def draw_medical_mask_template(width: int = 240,
                               height: int = 168) -> np.ndarray:
    """Draw a light-blue pleated surgical mask as RGBA.

    The top edge peaks at the centre (the nose bridge) and drops towards the sides so
    the eyes stay uncovered when the box top sits above the nose; the bottom edge
    follows the chin.

    Returns:
        np.ndarray: uint8 [height, width, 4], alpha 255 on the mask, 0 elsewhere.
    """
    ss = 4  # drawn 4x larger, then area-downsampled for anti-aliased edges
    W, H = width * ss, height * ss
    u = np.linspace(0, 1, 81)
    top = np.minimum(0.32, 1.5 * np.maximum(0, np.abs(u - 0.5) - 0.03))
    bottom = 1 - 0.45 * (2 * np.abs(u - 0.5))**2
    pts = np.concatenate([np.stack([u, top], 1),
                          np.stack([u[::-1], bottom[::-1]], 1)])
    poly = np.round(pts * [W - 1, H - 1]).astype(np.int32)
    rgba = np.zeros((H, W, 4), np.uint8)
    shape = np.zeros((H, W), np.uint8)
    cv2.fillPoly(shape, [poly], 255)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 150, 196, 228
    # Pleats: darker bands that follow the mask's curvature.
    for frac in (0.42, 0.58, 0.74):
        band = np.stack([u, top + (bottom - top) * frac], 1)
        line = np.round(band * [W - 1, H - 1]).astype(np.int32)
        cv2.polylines(rgba, [line], False, (110, 160, 200, 255), 3 * ss)
    wire = np.stack([u, top + 0.03], 1)[25:56]
    cv2.polylines(rgba, [np.round(wire * [W - 1, H - 1]).astype(np.int32)],
                  False, (225, 235, 245, 255), 2 * ss)
    rgba[..., 3] = shape
    rgba[shape == 0, :3] = 0
    return cv2.resize(rgba, (width, height), interpolation=cv2.INTER_AREA)


def composite_rgba(img: np.ndarray, rgba: np.ndarray) -> Tuple[np.ndarray,
                                                               np.ndarray]:
    """Alpha-composite an image-sized RGBA layer over ``img``.

    Returns:
        tuple: ``(new uint8 image, coverage float32 [H,W] in [0,1])``.
    """
    alpha = rgba[..., 3].astype(np.float32) / 255.0
    out = img.astype(np.float32) * (1 - alpha[..., None]) + \
        rgba[..., :3].astype(np.float32) * alpha[..., None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), alpha


def _update_visibility(results: dict, coverage: np.ndarray, kind: str) -> None:
    vis = results.get('visibility_mask')
    if vis is None:
        vis = np.ones(coverage.shape, np.float32)
    results['visibility_mask'] = (vis * (1.0 - coverage)).astype(np.float32)
    prev = results.get('occlusion_type')
    results['occlusion_type'] = kind if not prev else f'{prev}+{kind}'


@TRANSFORMS.register_module()
class MedicalMaskOcclusion(BaseTransform):
    """Paste a surgical mask placed from the nose and mouth corners.

    Reference points are the sample's ``landmarks`` ([5,2]) if present, else the
    ArcFace template scaled to the image. Placement (pixels of a 112-wide face, scaled
    with the image width): each point jittered by U(-3,3); the box is
    ``mouth_width * 4 * scale`` wide, ``(mouth_y - nose_y) * 4 * scale`` high, centred
    on the mouth, its top 25 px above the nose, shifted by U(-5,5) and rotated by
    U(-7,7) degrees about the nose; ``scale ~ U(0.95, 1.10)``.

    Examples:
        >>> occluded_pipeline = [dict(type='MedicalMaskOcclusion', prob=1.0),
        ...                      dict(type='FaceRandomFlip'),
        ...                      dict(type='PackFaceInputs')]

    Args:
        prob (float): Probability of occluding. Defaults to 0.5.
        template (str, optional): RGBA PNG; defaults to the shipped template.
        point_jitter (float): Defaults to 3.
        shift (float): Defaults to 5.
        scale_range (tuple): Defaults to (0.95, 1.10).
        max_rotation (float): Degrees. Defaults to 7.
        top_above_nose (float): Defaults to 25.
    """

    def __init__(self,
                 prob: float = 0.5,
                 template: Optional[str] = None,
                 point_jitter: float = 3.0,
                 shift: float = 5.0,
                 scale_range: Tuple[float, float] = (0.95, 1.10),
                 max_rotation: float = 7.0,
                 top_above_nose: float = 25.0) -> None:
        self.prob = prob
        self.template_path = template or DEFAULT_MASK_TEMPLATE
        self.point_jitter = point_jitter
        self.shift = shift
        self.scale_range = tuple(scale_range)
        self.max_rotation = max_rotation
        self.top_above_nose = top_above_nose
        self._template = None

    @property
    def template(self) -> np.ndarray:
        if self._template is None:
            if not osp.isfile(self.template_path):
                raise MissingFileError(
                    self.template_path, 'RGBA mask template (make it with '
                    'tools/misc/make_mask_template.py)')
            try:
                t = cv2.imread(self.template_path, cv2.IMREAD_UNCHANGED)
            except cv2.error:  # a header claiming more pixels than OpenCV admits
                t = None
            if t is None or t.ndim != 3 or t.shape[2] != 4 or \
                    t.dtype != np.uint8:
                raise DataFormatError(self.template_path,
                                      'expected an 8-bit RGBA PNG')
            t = cv2.cvtColor(t, cv2.COLOR_BGRA2RGBA)
            if t[..., 3].max() == 1:
                # A 0/1 alpha (binary mask) would paste a 1/255-opaque mask and
                # mark the face visible: read it as 0/255.
                t[..., 3] *= 255
            self._template = t
        return self._template

    def placement(self, points: np.ndarray, width: int,
                  rng=np.random) -> np.ndarray:
        """Affine [2,3] mapping template pixels onto the image.

        Args:
            points (np.ndarray): [5,2] reference points (ArcFace order).
            width (int): Image width (the pixel constants scale with width / 112).
            rng: numpy random state.
        """
        unit = width / 112.0
        pts = points.astype(np.float64) + rng.uniform(
            -self.point_jitter, self.point_jitter, size=points.shape) * unit
        nose, ml, mr = pts[2], pts[3], pts[4]
        scale = rng.uniform(*self.scale_range)
        mouth_w = np.linalg.norm(mr - ml)
        mouth_y = (ml[1] + mr[1]) / 2
        box_w = mouth_w * 4 * scale
        box_h = max(mouth_y - nose[1], 1.0) * 4 * scale
        cx = (ml[0] + mr[0]) / 2
        top = nose[1] - self.top_above_nose * unit
        shift = rng.uniform(-self.shift, self.shift, size=2) * unit
        angle = rng.uniform(-self.max_rotation, self.max_rotation)
        th, tw = self.template.shape[:2]
        # template -> axis-aligned box, then rotate about the nose, then shift
        A = np.array([[box_w / tw, 0, cx - box_w / 2],
                      [0, box_h / th, top], [0, 0, 1]])
        R = np.vstack([cv2.getRotationMatrix2D(
            (float(nose[0]), float(nose[1])), float(angle), 1.0), [0, 0, 1]])
        T = np.array([[1, 0, shift[0]], [0, 1, shift[1]], [0, 0, 1]])
        return (T @ R @ A)[:2]

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            return results
        img = results['img']
        h, w = img.shape[:2]
        points = results.get('landmarks')
        if points is None:
            points = ARCFACE_REF_POINTS * [w / 112.0, h / 112.0]
        M = self.placement(np.asarray(points).reshape(5, 2), w)
        layer = cv2.warpAffine(self.template, M, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        results['img'], coverage = composite_rgba(img, layer)
        _update_visibility(results, coverage, 'medical_mask')
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(prob={self.prob})'
