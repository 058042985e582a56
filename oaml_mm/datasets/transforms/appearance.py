"""Appearance jitter: the look of a face and its occluders changes, visibility not.

A visibility predictor trained on one face style reads any unfamiliar appearance as
occlusion (docs/models.md, "Occlusion segmenter"). ``AppearanceJitter`` draws a new
look for the whole image -- colour cast, hue, saturation or grey, gamma and contrast,
directional lighting, blur, sensor noise, and optionally the real photos' greyscale,
low resolution and JPEG artefacts -- and leaves ``visibility_mask`` as it is,
so the predictor learns that appearance alone is never occlusion. Used before
:class:`RandomOcclusion` it varies the face; after it, face and occluders together.
"""
from typing import Optional, Tuple

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from oaml_mm.errors import ConfigError
from oaml_mm.registry import TRANSFORMS
from .augmenter import _INTERPOLATIONS, low_res

__all__ = ['AppearanceJitter']


@TRANSFORMS.register_module()
class AppearanceJitter(BaseTransform):
    """Randomise colour, tone, lighting, sharpness and noise of the whole image.

    Each operation runs with probability ``op_prob`` (independently, in this order):

    * colour cast: per-channel gain ``U(1 - colour, 1 + colour)`` and offset
      ``U(-40 colour, 40 colour)``;
    * hue shift (any angle) and saturation ``U(0, 1.6)``, or (one time in five)
      grey;
    * gamma ``exp(U(-gamma, gamma))`` and contrast ``U(1 - contrast, 1 + contrast)``
      around the mean;
    * directional lighting: the image times ``1 + s t`` where ``t`` runs linearly
      from -1 to 1 across the image in a random direction, ``s ~ U(0, lighting)``;
    * Gaussian blur of sigma ``U(0.3, blur_sigma)``;
    * Gaussian noise of s.d. ``U(0, noise_std)`` grey levels;
    * with probability ``grey_prob`` (not ``op_prob``): grey (a grey-scale
      photo);
    * when ``low_res_range`` is set: down to a side ratio ``U(*low_res_range)``
      and back up, random interpolations (a small face upsampled);
    * when ``jpeg_quality`` is set: a JPEG round trip at quality
      ``U(*jpeg_quality)``.

    The last three are off by default and draw no random numbers then, so a
    pipeline without them is unchanged.

    Only ``results['img']`` (uint8 [H,W,3] RGB or [H,W] grey) changes; the
    visibility mask and every other key stay. Randomness comes from ``np.random``.

    Examples:
        >>> pipeline = [dict(type='AppearanceJitter'),
        ...             dict(type='RandomOcclusion', prob=0.6),
        ...             dict(type='AppearanceJitter', op_prob=0.3),
        ...             dict(type='PackFaceInputs', grid=(28, 28))]

    Args:
        prob (float): Probability of jittering an image at all, in [0, 1].
            Defaults to 0.8.
        op_prob (float): Probability of each operation, in [0, 1]. Defaults to 0.5.
        colour (float): Colour-cast strength in [0, 1). Defaults to 0.4.
        gamma (float): Log-gamma range, >= 0. Defaults to 0.6.
        contrast (float): Contrast range in [0, 1). Defaults to 0.5.
        lighting (float): Largest lighting slope in [0, 1). Defaults to 0.6.
        blur_sigma (float): Largest blur sigma in pixels, >= 0.3. Defaults to 2.0.
        noise_std (float): Largest noise s.d. in grey levels, >= 0.
            Defaults to 12.
        recolour (bool): Include the hue / saturation / grey operation.
            Defaults to True.
        grey_prob (float): Probability in [0, 1] of a grey image (besides the
            recolour operation's). Defaults to 0.
        low_res_range (tuple, optional): Side-ratio range ``(low, high)`` with
            ``0 < low <= high <= 1`` of the low-resolution operation (run with
            ``op_prob``). Defaults to None (off).
        jpeg_quality (tuple, optional): JPEG quality range ``(low, high)``,
            integers with ``1 <= low <= high <= 100`` (run with ``op_prob``).
            Defaults to None (off).

    Raises:
        ConfigError: An argument out of its range.
    """

    def __init__(self,
                 prob: float = 0.8,
                 op_prob: float = 0.5,
                 colour: float = 0.4,
                 gamma: float = 0.6,
                 contrast: float = 0.5,
                 lighting: float = 0.6,
                 blur_sigma: float = 2.0,
                 noise_std: float = 12.0,
                 recolour: bool = True,
                 grey_prob: float = 0.0,
                 low_res_range: Optional[Tuple[float, float]] = None,
                 jpeg_quality: Optional[Tuple[int, int]] = None) -> None:
        checks: Tuple[tuple, ...] = (
            ('prob', prob, 0.0, 1.0, True), ('op_prob', op_prob, 0.0, 1.0, True),
            ('grey_prob', grey_prob, 0.0, 1.0, True),
            ('colour', colour, 0.0, 1.0, False),
            ('contrast', contrast, 0.0, 1.0, False),
            ('lighting', lighting, 0.0, 1.0, False),
            ('gamma', gamma, 0.0, np.inf, False),
            ('blur_sigma', blur_sigma, 0.3, np.inf, False),
            ('noise_std', noise_std, 0.0, np.inf, False))
        for name, v, low, high, closed in checks:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and \
                low <= v and (v <= high if closed else v < high)
            if not ok:
                raise ConfigError(
                    f'AppearanceJitter: {name} must be in [{low}, {high}'
                    f'{"]" if closed else ")"}, got {v!r}')
        self.prob = float(prob)
        self.op_prob = float(op_prob)
        self.colour = float(colour)
        self.gamma = float(gamma)
        self.contrast = float(contrast)
        self.lighting = float(lighting)
        self.blur_sigma = float(blur_sigma)
        self.noise_std = float(noise_std)
        self.recolour = bool(recolour)
        self.grey_prob = float(grey_prob)
        self.low_res_range = self._range('low_res_range', low_res_range, 0.0,
                                         1.0, float)
        self.jpeg_quality = self._range('jpeg_quality', jpeg_quality, 1, 100,
                                        int)

    @staticmethod
    def _range(name: str, value, low, high, kind) -> Optional[tuple]:
        """``value`` as a ``(lo, hi)`` tuple with ``low <(=) lo <= hi <= high``
        (the float range excludes ``low``), or None."""
        if value is None:
            return None
        try:
            lo, hi = value
            ok = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                     for v in (lo, hi))
            if kind is int:
                ok = ok and float(lo).is_integer() and float(hi).is_integer()
            ok = ok and (low <= lo if kind is int else low < lo) and \
                lo <= hi <= high
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(
                f'AppearanceJitter: {name} must be None or (low, high) with '
                f'{low} {"<=" if kind is int else "<"} low <= high <= {high}'
                f'{" (integers)" if kind is int else ""}, got {value!r}')
        return kind(lo), kind(hi)

    def transform(self, results: dict) -> dict:
        rng = np.random
        if rng.rand() >= self.prob:
            return results
        img = np.asarray(results['img'])
        gray = img.ndim == 2
        x = (np.repeat(img[..., None], 3, 2) if gray else img).astype(
            np.float32)
        h, w = x.shape[:2]
        p = self.op_prob
        if rng.rand() < p:
            c = self.colour
            x = x * rng.uniform(1 - c, 1 + c, 3).astype(np.float32) + \
                rng.uniform(-40 * c, 40 * c, 3).astype(np.float32)
        if rng.rand() < p and self.recolour:
            u8 = np.clip(x, 0, 255).astype(np.uint8)
            if rng.rand() < 0.2:
                x = np.repeat(cv2.cvtColor(u8, cv2.COLOR_RGB2GRAY)[..., None],
                              3, 2).astype(np.float32)
            else:
                hsv = cv2.cvtColor(u8, cv2.COLOR_RGB2HSV).astype(np.float32)
                hsv[..., 0] = (hsv[..., 0] + rng.uniform(0, 180)) % 180
                hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0, 1.6), 0,
                                      255)
                x = cv2.cvtColor(hsv.astype(np.uint8),
                                 cv2.COLOR_HSV2RGB).astype(np.float32)
        if rng.rand() < p:
            g = np.float32(np.exp(rng.uniform(-self.gamma, self.gamma)))
            x = 255.0 * (np.clip(x, 0, 255) / 255.0)**g
            mean = x.mean()
            x = (x - mean) * np.float32(
                rng.uniform(1 - self.contrast, 1 + self.contrast)) + mean
        if rng.rand() < p:
            theta = rng.uniform(0, 2 * np.pi)
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            t = (xx - w / 2) * np.cos(theta) + (yy - h / 2) * np.sin(theta)
            t = t / max(float(np.abs(t).max()), 1e-6)
            slope = np.float32(rng.uniform(0, self.lighting))
            x = x * (1 + slope * t)[..., None]
        if rng.rand() < p:
            x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.3, self.blur_sigma))
        if rng.rand() < p:
            x = x + rng.normal(0, rng.uniform(0, self.noise_std),
                               x.shape).astype(np.float32)
        out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        if self.grey_prob and rng.rand() < self.grey_prob:
            out = np.repeat(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)[..., None],
                            3, 2)
        if self.low_res_range and rng.rand() < p:
            n = len(_INTERPOLATIONS)
            out = low_res(out, rng.uniform(*self.low_res_range),
                          _INTERPOLATIONS[rng.randint(n)],
                          _INTERPOLATIONS[rng.randint(n)])
        if self.jpeg_quality and rng.rand() < p:
            q = int(rng.randint(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
            ok, buf = cv2.imencode('.jpg', out, [cv2.IMWRITE_JPEG_QUALITY, q])
            if ok:  # channel order is irrelevant to a round trip
                out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        results['img'] = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY) if gray else out
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(prob={self.prob}, '
                f'op_prob={self.op_prob}, colour={self.colour}, '
                f'gamma={self.gamma}, contrast={self.contrast}, '
                f'lighting={self.lighting}, blur_sigma={self.blur_sigma}, '
                f'noise_std={self.noise_std}, grey_prob={self.grey_prob}, '
                f'low_res_range={self.low_res_range}, '
                f'jpeg_quality={self.jpeg_quality})')
