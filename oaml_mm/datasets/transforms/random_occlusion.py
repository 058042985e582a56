"""Random occluders with exact masks: the occlusion head learns "covered", not "niqab".

OAML's OcclusionHead (docs/models.md) learns from the occluders it is shown; with only
medical masks and niqab-style coverings it learns those shapes rather than occlusion.
``RandomOcclusion`` pastes 1..``max_occluders`` occluders from an open-ended generator
-- star-shaped polygons, rotated ellipses, thresholded smooth-noise blobs, thick
strokes, rotated rounded rectangles; solid, gradient, smooth-noise, stripe, checker or
copied-and-recoloured image textures; hard or soft edges; anywhere on the image -- and
records exactly what it covered (docs/synthface.md, "Random occluders"). It draws no
SynthFace occluder (``oaml_mm/synthface/occluders.py``), so held-out occluder families
stay unseen.
"""
from typing import Dict, Sequence, Tuple

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from oaml_mm.errors import ConfigError
from oaml_mm.registry import TRANSFORMS
from .occlusion import _update_visibility

__all__ = ['RandomOcclusion']

SHAPES = ('polygon', 'ellipse', 'blob', 'stroke', 'rounded_rect')
TEXTURES = ('solid', 'gradient', 'noise', 'stripes', 'checker', 'patch')


@TRANSFORMS.register_module()
class RandomOcclusion(BaseTransform):
    """Paste random occluders and record their exact coverage.

    Per image (with probability ``prob``): a total footprint ``A ~ U(area_range)`` of
    the image area is split at random between ``n ~ U{1..max_occluders}`` occluders,
    each a random shape of ``shapes`` centred anywhere on the image (it may run off an
    edge), filled with a random texture of ``textures`` and pasted with hard or (with
    probability ``soft_edge_prob``) blurred edges. The footprint actually covered --
    pixels any occluder touches, overlaps and off-image parts not counted -- lies in
    ``area_range``: a draw outside it is redrawn (``max_tries`` times), then replaced
    by one rounded rectangle of area ``A`` inside the image.

    The pasted image is ``img * (1 - a) + texture * a`` per occluder (``a`` its alpha,
    1 inside a hard shape, 0 outside its footprint), so pixels outside every footprint
    are untouched. ``results['visibility_mask']`` (float32 [H,W], 1 = visible) is
    multiplied by ``1 - coverage`` -- an existing mask (e.g. of
    :class:`MedicalMaskOcclusion` or a data set's annotation) is kept -- and
    ``results['occlusion_type']`` gets ``'random'`` appended, as
    :class:`MedicalMaskOcclusion` does; :class:`PackFaceInputs` turns the mask into
    ``gt_visibility`` with :func:`visibility_to_grid`.

    Randomness comes from ``np.random`` (as the other transforms), so a seeded
    ``np.random`` (the samplers' per-sample seeding) gives the same occluders.

    Examples:
        >>> pipeline = [dict(type='MedicalMaskOcclusion', prob=0.5),
        ...             dict(type='RandomOcclusion', prob=0.3,
        ...                  area_range=(0.05, 0.5)),
        ...             dict(type='FaceRandomFlip'), dict(type='PackFaceInputs')]

    Args:
        prob (float): Probability of occluding an image, in [0, 1]. Defaults to 0.5.
        max_occluders (int): At most this many occluders per image (>= 1).
            Defaults to 3.
        area_range (tuple[float, float]): Range of the covered fraction of the image,
            ``0 < low <= high <= 1``. Defaults to (0.05, 0.5).
        shapes (Sequence[str]): Shape families drawn from, a non-empty subset of
            ``('polygon', 'ellipse', 'blob', 'stroke', 'rounded_rect')``.
        textures (Sequence[str]): Texture families drawn from, a non-empty subset of
            ``('solid', 'gradient', 'noise', 'stripes', 'checker', 'patch')``
            (``patch``: the image shifted by a random offset, recoloured).
        soft_edge_prob (float): Probability that an occluder's edge is blurred
            (inside its footprint only), in [0, 1]. Defaults to 0.5.
        max_tries (int): Draws of the layout before the fallback (>= 1).
            Defaults to 4.

    Raises:
        ConfigError: An argument out of its range or an unknown family.
    """

    def __init__(self,
                 prob: float = 0.5,
                 max_occluders: int = 3,
                 area_range: Tuple[float, float] = (0.05, 0.5),
                 shapes: Sequence[str] = SHAPES,
                 textures: Sequence[str] = TEXTURES,
                 soft_edge_prob: float = 0.5,
                 max_tries: int = 4) -> None:
        for name, p in (('prob', prob), ('soft_edge_prob', soft_edge_prob)):
            if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
                raise ConfigError(
                    f'RandomOcclusion: {name} must be in [0, 1], got {p!r}')
        for name, v in (('max_occluders', max_occluders),
                        ('max_tries', max_tries)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) \
                    or v < 1:
                raise ConfigError(
                    f'RandomOcclusion: {name} must be an integer >= 1, '
                    f'got {v!r}')
        try:
            low, high = (float(v) for v in area_range)
        except (TypeError, ValueError):
            raise ConfigError('RandomOcclusion: area_range must be (low, high), '
                              f'got {area_range!r}') from None
        if not 0.0 < low <= high <= 1.0:
            raise ConfigError(f'RandomOcclusion: area_range {area_range!r} '
                              'needs 0 < low <= high <= 1')
        for name, given, known in (('shapes', shapes, SHAPES),
                                   ('textures', textures, TEXTURES)):
            if isinstance(given, str) or not given or \
                    any(g not in known for g in given):
                raise ConfigError(
                    f'RandomOcclusion: {name} must be a non-empty subset of '
                    f'{known}, got {given!r}')
        self.prob = float(prob)
        self.max_occluders = int(max_occluders)
        self.area_range = (low, high)
        self.shapes = tuple(shapes)
        self.textures = tuple(textures)
        self.soft_edge_prob = float(soft_edge_prob)
        self.max_tries = int(max_tries)
        self._grids: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]] = {}

    # shapes: uint8 [H,W] footprints (255 inside) ------------------------------------
    @staticmethod
    def _polygon(h: int, w: int, c: np.ndarray, area: float,
                 rng) -> np.ndarray:
        n = rng.randint(3, 10)
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(0.4, 1.0, n)
        pts = np.stack([np.cos(ang) * rad, np.sin(ang) * rad], 1)
        pts[:, 0] *= np.exp(rng.uniform(-0.6, 0.6))  # aspect
        poly_area = cv2.contourArea(pts.astype(np.float32))
        pts *= np.sqrt(area / max(poly_area, 1e-6))
        m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(m, [np.round(pts + c).astype(np.int32)], 255)
        return m

    @staticmethod
    def _ellipse(h: int, w: int, c: np.ndarray, area: float,
                 rng) -> np.ndarray:
        r = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
        a = np.sqrt(area / np.pi * r)
        b = area / (np.pi * a)
        m = np.zeros((h, w), np.uint8)
        cv2.ellipse(m, (int(round(c[0])), int(round(c[1]))),
                    (max(int(round(a)), 1), max(int(round(b)), 1)),
                    float(rng.uniform(0, 180)), 0, 360, 255, -1)
        return m

    @staticmethod
    def _blob(h: int, w: int, c: np.ndarray, area: float, rng) -> np.ndarray:
        # Smooth noise with a radial fall-off, thresholded at the quantile that
        # leaves ``area`` pixels of its box: irregular, one main lobe.
        side = int(np.clip(np.sqrt(area * 2.0), 4, 2 * max(h, w)))
        k = rng.randint(3, 7)
        field = cv2.resize(rng.rand(k, k).astype(np.float32), (side, side),
                           interpolation=cv2.INTER_CUBIC)
        t = np.linspace(-1, 1, side, dtype=np.float32)
        field = field - 0.8 * (t[:, None]**2 + t[None, :]**2)
        flat = field.ravel()
        drop = int(np.clip(flat.size - round(area), 0, flat.size - 1))
        thr = np.partition(flat, drop)[drop]
        box = (field >= thr).astype(np.uint8) * 255
        m = np.zeros((h, w), np.uint8)
        x0, y0 = int(round(c[0])) - side // 2, int(round(c[1])) - side // 2
        xs, ys = max(x0, 0), max(y0, 0)
        xe, ye = min(x0 + side, w), min(y0 + side, h)
        if xe > xs and ye > ys:
            m[ys:ye, xs:xe] = box[ys - y0:ye - y0, xs - x0:xe - x0]
        return m

    @staticmethod
    def _stroke(h: int, w: int, c: np.ndarray, area: float,
                rng) -> np.ndarray:
        thick = max(int(round(np.sqrt(area) * rng.uniform(0.2, 0.5))), 2)
        length = area / thick
        n = rng.randint(2, 5)
        heading = rng.uniform(0, 2 * np.pi)
        steps = [np.zeros(2)]
        for _ in range(n - 1):
            heading += rng.uniform(-1.2, 1.2)
            steps.append(steps[-1] + length / (n - 1) *
                         np.array([np.cos(heading), np.sin(heading)]))
        pts = np.array(steps)
        pts += c - pts.mean(0)
        m = np.zeros((h, w), np.uint8)
        cv2.polylines(m, [np.round(pts).astype(np.int32)], False, 255, thick)
        return m

    @staticmethod
    def _rounded_rect(h: int, w: int, c: np.ndarray, area: float,
                      rng) -> np.ndarray:
        r = np.exp(rng.uniform(np.log(0.25), np.log(4.0)))
        bw, bh = np.sqrt(area * r), np.sqrt(area / r)
        rad = rng.uniform(0, 0.5) * min(bw, bh)
        corners = []
        for (sx, sy), start in (((1, 1), 0), ((-1, 1), 90), ((-1, -1), 180),
                                ((1, -1), 270)):
            centre = (sx * (bw / 2 - rad), sy * (bh / 2 - rad))
            corners.append(cv2.ellipse2Poly(
                (0, 0), (1000, 1000), 0, start, start + 90, 15).astype(
                    np.float64) * (rad / 1000) + centre)
        pts = np.concatenate(corners)
        theta = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(theta), -np.sin(theta)],
                        [np.sin(theta), np.cos(theta)]])
        pts = pts @ rot.T + c
        m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 255)
        return m

    # textures: float32 [H,W,3] ------------------------------------------------------
    def _grid(self, h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
        if (h, w) not in self._grids:
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            self._grids[(h, w)] = (xx, yy)
        return self._grids[(h, w)]

    def _texture(self, img: np.ndarray, box: Tuple[int, int, int, int],
                 rng) -> np.ndarray:
        """A texture for the ``(x, y, w, h)`` box of ``img``: float32 [h, w, 3]."""
        x, y, bw, bh = box
        H, W = img.shape[:2]
        kind = self.textures[rng.randint(len(self.textures))]
        c1 = rng.uniform(0, 255, 3).astype(np.float32)
        c2 = rng.uniform(0, 255, 3).astype(np.float32)
        if kind == 'solid':
            return np.broadcast_to(c1, (bh, bw, 3))
        if kind == 'patch':
            # The face itself, from elsewhere: skin-like occluders (hands, hair)
            # that no colour cue gives away.
            shift = rng.uniform(-0.5, 0.5, 2) * [W, H]
            M = np.float32([[1, 0, shift[0] - x], [0, 1, shift[1] - y]])
            src = cv2.warpAffine(img, M, (bw, bh),
                                 borderMode=cv2.BORDER_REFLECT)
            gain = rng.uniform(0.6, 1.4, 3).astype(np.float32)
            bias = rng.uniform(-40, 40, 3).astype(np.float32)
            return src.astype(np.float32) * gain + bias
        xx, yy = self._grid(H, W)
        xx, yy = xx[y:y + bh, x:x + bw], yy[y:y + bh, x:x + bw]
        theta = rng.uniform(0, 2 * np.pi)
        u = xx * np.float32(np.cos(theta)) + yy * np.float32(np.sin(theta))
        if kind == 'gradient':
            t = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
        elif kind == 'noise':
            k = rng.randint(2, 8)
            t = cv2.resize(rng.rand(k, k).astype(np.float32), (bw, bh),
                           interpolation=cv2.INTER_CUBIC)
        elif kind == 'stripes':
            period = rng.uniform(3, 0.4 * max(H, W))
            t = 0.5 + 0.5 * np.sin(u * np.float32(2 * np.pi / period))
            if rng.rand() < 0.5:
                t = (t > 0.5).astype(np.float32)
        else:  # checker
            period = rng.uniform(3, 0.3 * max(H, W))
            v = yy * np.float32(np.cos(theta)) - xx * np.float32(np.sin(theta))
            t = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(
                np.float32)
        return c1 + (c2 - c1) * t[..., None]

    # layout ------------------------------------------------------------------------
    def _layout(self, h: int, w: int, rng) -> list:
        """Footprints (uint8 [H,W]) whose union covers a fraction in range."""
        low, high = self.area_range
        total = rng.uniform(low, high) * h * w
        for _ in range(self.max_tries):
            n = rng.randint(1, self.max_occluders + 1)
            parts = rng.dirichlet(np.full(n, 2.0)) * total
            masks = []
            for a in parts:
                kind = self.shapes[rng.randint(len(self.shapes))]
                c = rng.uniform(0, 1, 2) * [w - 1, h - 1]
                masks.append(getattr(self, f'_{kind}')(h, w, c, a, rng))
            union = np.count_nonzero(np.bitwise_or.reduce(masks)) / (h * w)
            if low <= union <= high:
                return masks
        # Fallback: one rectangle of the drawn area, inside the image.
        r = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
        bw = int(np.clip(round(np.sqrt(total * r)), 1, w))
        bh = int(np.clip(round(total / bw), 1, h))
        for _ in range(2):  # rounding may step outside the range on tiny images
            if bw * bh < low * h * w and bh < h:
                bh += 1
            if bw * bh > high * h * w and bh > 1:
                bh -= 1
        x0, y0 = rng.randint(0, w - bw + 1), rng.randint(0, h - bh + 1)
        m = np.zeros((h, w), np.uint8)
        m[y0:y0 + bh, x0:x0 + bw] = 255
        return [m]

    def transform(self, results: dict) -> dict:
        rng = np.random
        if rng.rand() >= self.prob:
            return results
        img = results['img']
        h, w = img.shape[:2]
        gray = img.ndim == 2
        src = np.repeat(img[..., None], 3, 2) if gray else img
        out = src.copy()
        visible = np.ones((h, w), np.float32)
        for m in self._layout(h, w, rng):
            box = cv2.boundingRect(m)
            x, y, bw, bh = box
            if bw == 0 or bh == 0:  # entirely off the image
                continue
            crop = m[y:y + bh, x:x + bw]
            alpha = crop.astype(np.float32) * np.float32(1 / 255)
            if rng.rand() < self.soft_edge_prob:
                # Blurred towards the outside, kept inside the footprint: the edge
                # softens, the footprint (and the untouched pixels) stay.
                k = 2 * rng.randint(1, 3) + 1
                alpha *= cv2.GaussianBlur(
                    cv2.copyMakeBorder(crop, k, k, k, k, cv2.BORDER_CONSTANT),
                    (k, k), 0)[k:-k, k:-k].astype(np.float32) * np.float32(
                        1 / 255)
            tex = self._texture(src, box, rng)
            region = out[y:y + bh, x:x + bw]
            # region + (texture - region) * alpha: where alpha is 0 the float
            # round trip gives every pixel back exactly.
            f = region.astype(np.float32)
            f += (tex - f) * alpha[..., None]
            region[...] = np.clip(np.rint(f, out=f), 0, 255, out=f)
            visible[y:y + bh, x:x + bw] *= 1 - alpha
        results['img'] = out[..., 0].copy() if gray else out
        _update_visibility(results, 1.0 - visible, 'random')
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(prob={self.prob}, '
                f'max_occluders={self.max_occluders}, '
                f'area_range={self.area_range}, shapes={self.shapes}, '
                f'textures={self.textures}, '
                f'soft_edge_prob={self.soft_edge_prob})')
