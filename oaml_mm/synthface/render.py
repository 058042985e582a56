"""Drawing SynthFace images with OpenCV and numpy.

A face is drawn in a *canonical* canvas (the 112x112 aligned frame plus a margin of
:data:`MARGIN` pixels on every side) from its :class:`~.identity.FaceIdentity` and a
per-image :class:`Nuisance`: small yaw/pitch move features by their depth, expression
moves brows, lids and mouth, and a Lambertian ellipsoid lights the head. The canvas is
then warped to the output exactly the way real aligned crops are made: the five
landmarks, disturbed by a detector's error, are fitted to the ArcFace template with a
similarity transform (Umeyama, "Least-squares estimation of transformation parameters
between two point patterns", TPAMI 1991), and a small alignment jitter is added. Camera
effects (white balance, blur, low resolution, noise, JPEG) come last.

Occluders (:mod:`.occluders`) are drawn in the same canonical canvas, warped with the
same transform and composited with a *hard* mask after both layers went through the same
camera effects, so the visibility mask is exact: every pixel where it is 1 equals the
unoccluded render, every pixel where it is 0 comes from the occluder.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from .canvas import CANVAS, GRID, MARGIN, SKIN, ellipse, fill, line
from .heldout import (FACE_STYLES, HELDOUT_OCCLUDERS, restyle_identity,
                      style_b_finish)
from .identity import FaceIdentity
from .occluders import OCCLUDERS

__all__ = [
    'ARCFACE_TEMPLATE', 'MARGIN', 'CANVAS', 'Nuisance', 'RenderedFace',
    'sample_nuisance', 'face_geometry', 'similarity_transform', 'render_face',
    'encode_jpeg', 'identity_texture'
]

#: ArcFace 112x112 template: left eye, right eye, nose tip, left and right mouth corner.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32)

_HAIR = np.array([[22, 18, 16], [58, 40, 30], [102, 70, 44], [142, 78, 40],
                  [186, 150, 96], [226, 200, 140], [150, 148, 146],
                  [226, 224, 218]],
                 dtype=np.float32)
_IRIS = np.array([[58, 38, 24], [108, 70, 36], [96, 108, 58], [68, 118, 160],
                  [104, 116, 126], [40, 30, 24]],
                 dtype=np.float32)


def _palette(table: np.ndarray, t: float) -> np.ndarray:
    """Blend neighbouring palette rows at position ``t`` in [0, 1]."""
    pos = float(np.clip(t, 0, 1)) * (len(table) - 1)
    i = min(int(pos), len(table) - 2)
    f = pos - i
    return table[i] * (1 - f) + table[i + 1] * f


@dataclass
class Nuisance:
    """What changes between two photographs of the same person.

    All fields are plain numbers so a nuisance can be stored or replayed. Build one with
    :func:`sample_nuisance`.
    """

    yaw: float  # pixels the nose tip moves sideways
    pitch: float  # pixels the nose tip moves down
    roll: float  # residual in-plane rotation after alignment, degrees
    scale: float  # residual scale after alignment
    shift: Tuple[float, float]  # residual translation after alignment, pixels
    landmark_noise: np.ndarray  # [5,2] detector error before alignment, pixels
    smile: float
    mouth_open: float
    brow_raise: float
    eye_open: float
    gaze: Tuple[float, float]
    light_azimuth: float  # radians, 0 = frontal
    light_elevation: float
    light_strength: float
    ambient: float
    light_colour: Tuple[float, float, float]
    white_balance: Tuple[float, float, float]
    brightness: float
    contrast: float
    blur: float  # Gaussian sigma, pixels of the output
    lowres: float  # 1 = none, <1 = down-sample factor before blowing back up
    noise: float  # Gaussian noise sigma, grey levels
    jpeg_quality: int
    background: int  # background kind
    background_colours: np.ndarray  # [3,3] RGB
    clothes_colour: Tuple[float, float, float]
    seed: int  # seeds the background and noise fields


@dataclass
class RenderedFace:
    """One rendered image.

    Attributes:
        image (numpy.ndarray): uint8 [H,W,3] RGB, with the occluder if any.
        clean (numpy.ndarray): uint8 [H,W,3] RGB, the same image without occluder.
        visibility (numpy.ndarray): uint8 [H,W], 1 where the face/background is
            visible, 0 where the occluder covers it.
        landmarks (numpy.ndarray): float32 [5,2] true landmarks in output pixels.
        occlusion (str): The occlusion type, ``'none'`` for a clean face.
    """

    image: np.ndarray
    clean: np.ndarray
    visibility: np.ndarray
    landmarks: np.ndarray
    occlusion: str


def sample_nuisance(rng: np.random.Generator, strength: float = 0.5) -> Nuisance:
    """Draw one image's nuisance.

    Args:
        rng (numpy.random.Generator): Source of randomness.
        strength (float): Scales every geometric and camera nuisance range; 0 gives
            frontal, evenly lit, sharp images, 1 the hardest setting (roughly: yaw up to
            +-8 px of nose shift, roll +-12 deg, blur sigma up to 1.8, noise sigma up to
            14, JPEG quality down to 30). Defaults to 0.5.

    Returns:
        Nuisance: The draw.
    """
    s = float(strength)

    def sym(amp: float) -> float:
        return float(rng.uniform(-amp, amp))

    # Lighting: mostly from the front and above, sometimes hard side light.
    az = sym(0.3 + 1.1 * s)
    el = float(rng.uniform(-0.1, 0.6))
    temp = sym(0.25 * (0.3 + s))  # warm <-> cool
    light_colour = (1.0 + temp, 1.0, 1.0 - temp)
    wb_amp = 0.12 * (0.3 + s)
    white_balance = (1.0 + sym(wb_amp), 1.0 + sym(wb_amp * 0.5),
                     1.0 + sym(wb_amp))
    blur = float(rng.uniform(0.0, 1.8 * s)) if rng.random() < 0.7 else 0.0
    lowres = float(rng.uniform(1.0 - 0.6 * s, 1.0)) if rng.random() < 0.3 * (
        1 + s) else 1.0
    # Backgrounds of real photos are rarely saturated: pull the colours to grey.
    bg_cols = rng.uniform(20, 235, size=(3, 3))
    grey = bg_cols.mean(axis=1, keepdims=True)
    bg_cols = (grey + rng.uniform(0.15, 0.7) * (bg_cols - grey)).astype(np.float32)
    return Nuisance(
        yaw=sym(8.0 * s),
        pitch=sym(4.0 * s),
        roll=sym(12.0 * s),
        scale=1.0 + sym(0.1 * s),
        shift=(sym(4.0 * s), sym(4.0 * s)),
        landmark_noise=rng.normal(0, 0.4 + 1.4 * s, size=(5, 2)).astype(
            np.float32),
        smile=float(rng.uniform(0, 1)) if rng.random() < 0.5 else 0.0,
        mouth_open=float(rng.uniform(0, 1)) if rng.random() < 0.25 else 0.0,
        brow_raise=sym(1.0),
        eye_open=float(rng.uniform(0.55, 1.1)),
        gaze=(sym(1.0), sym(0.5)),
        light_azimuth=az,
        light_elevation=el,
        light_strength=float(rng.uniform(0.45, 0.55 + 0.5 * s)),
        ambient=float(rng.uniform(0.45, 0.65)),
        light_colour=light_colour,
        white_balance=white_balance,
        brightness=sym(30.0 * s),
        contrast=1.0 + sym(0.35 * s),
        blur=blur,
        lowres=lowres,
        noise=float(rng.uniform(0.5, 0.5 + 13.5 * s)),
        jpeg_quality=int(rng.integers(int(95 - 65 * s), 96)),
        background=int(rng.integers(0, 4)),
        background_colours=bg_cols,
        clothes_colour=tuple(float(c) for c in rng.uniform(15, 230, size=3)),
        seed=int(rng.integers(0, 2**31 - 1)))


def _rot(points: np.ndarray, centre: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    d = points - centre
    return np.stack([c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1]],
                    axis=1) + centre


def face_geometry(ident: FaceIdentity, nuis: Nuisance) -> Dict[str, np.ndarray]:
    """Key points and outlines of a face in aligned-frame coordinates (no margin).

    Yaw and pitch move every point by ``(depth - 0.3)`` times the nose-tip shift, so the
    nose moves most and the silhouette moves the other way, as in a small head turn.

    Args:
        ident (FaceIdentity): The person.
        nuis (Nuisance): The image's nuisance.

    Returns:
        dict: float32 arrays. ``landmarks`` [5,2] (eyes, nose tip, mouth corners);
        ``head`` outline polygon; ``eye_l``/``eye_r`` eye polygons;
        ``iris_l``/``iris_r`` [3] (x, y, r); ``brow_l``/``brow_r`` polygons;
        ``upper_lip``, ``lower_lip``, ``mouth_gap``; ``nostrils`` [2,2]; ``ears`` [2,2];
        and scalars ``cx``, ``head_half_width``, ``cheek_y``, ``chin_y``,
        ``head_top``, ``brow_y``.
    """
    p = ident.params
    cx = 56.0
    yaw, pitch = nuis.yaw, nuis.pitch

    def proj(pts: np.ndarray, depth: float) -> np.ndarray:
        pts = np.asarray(pts, dtype=np.float32).reshape(-1, 2).copy()
        pts[:, 0] += yaw * (depth - 0.3)
        pts[:, 1] += pitch * (depth - 0.3)
        return pts

    geo: Dict[str, np.ndarray] = {}
    a = p['head_half_width']
    top, cheek, chin = p['head_top'], p['cheek_y'], p['chin_y']
    # Head outline: an upper half ellipse joined to a jaw whose width falls as
    # sqrt(1 - t^k) (k = jaw_power: squarer for larger k), narrowed by the taper.
    up_t = np.linspace(np.pi, 0, 24)
    upper = np.stack([cx + a * np.cos(up_t), cheek - (cheek - top) * np.sin(up_t)],
                     axis=1)
    t = np.linspace(0, 1, 20)[1:]
    half = a * np.sqrt(np.clip(1 - t**p['jaw_power'], 0, 1)) * (
        1 - p['jaw_taper'] * t) + 3.0 * (1 - t**6) * (t > 0.9)
    ys = cheek + (chin - cheek) * t
    right = np.stack([cx + half, ys], axis=1)
    left = np.stack([cx - half, ys], axis=1)[::-1]
    head = np.concatenate([upper, right, left])
    # The silhouette barely moves with a turn; the near cheek widens.
    head[:, 0] += -0.3 * yaw + 0.12 * yaw * (head[:, 0] - cx) / a
    head[:, 1] += -0.3 * pitch
    geo['head'] = head.astype(np.float32)

    ey = p['eye_y'] - 0.4 * nuis.brow_raise * 0
    centres = np.array([[cx - p['eye_half_dist'], ey], [cx + p['eye_half_dist'], ey]])
    for side, sign, name in ((0, -1, 'l'), (1, 1, 'r')):
        c = centres[side]
        w, h = p['eye_width'], p['eye_height'] * nuis.eye_open
        tt = np.linspace(0, 1, 12)
        xs = c[0] - w / 2 + w * tt
        upper_y = c[1] - h * np.sin(np.pi * tt) * (0.8 + 0.2 * tt if sign > 0 else
                                                   1.0 - 0.2 * tt)
        lower_y = c[1] + 0.55 * h * np.sin(np.pi * tt)
        poly = np.concatenate([np.stack([xs, upper_y], 1),
                               np.stack([xs[::-1], lower_y[::-1]], 1)])
        # outer corner up for a positive slant: rotate opposite ways on each side
        poly = _rot(poly, c, -sign * p['eye_slant'])
        geo['eye_' + name] = proj(poly, 0.45)
        iris = np.array([c[0] + nuis.gaze[0] * 1.2, c[1] - 0.15 * h + nuis.gaze[1]])
        geo['iris_' + name] = np.array(
            [*proj(iris, 0.5)[0], p['iris_radius']], dtype=np.float32)
        # brow: an arched band tapering outwards
        brow_y = c[1] - p['brow_gap'] - nuis.brow_raise * 1.5
        inner_x = c[0] - sign * (p['eye_width'] / 2 + 1.0)
        bt = np.linspace(0, 1, 10)
        bx = inner_x + sign * p['brow_length'] * bt
        by = brow_y - p['brow_arch'] * np.sin(np.pi * (0.2 + 0.8 * bt)) + \
            sign * 0 + p['brow_tilt'] * p['brow_length'] * bt
        thick = p['brow_thickness'] * (1.0 - 0.55 * bt)
        brow = np.concatenate([np.stack([bx, by - thick / 2], 1),
                               np.stack([bx[::-1], (by + thick / 2)[::-1]], 1)])
        geo['brow_' + name] = proj(brow, 0.5)
    geo['brow_y'] = np.float32(ey - p['eye_height'] - p['brow_gap'])

    ny, nw = p['nose_y'], p['nose_half_width']
    nose_tip = proj([cx, ny], 1.0)[0]
    geo['nose_tip'] = nose_tip
    geo['nostrils'] = proj([[cx - nw * 0.55, ny + 1.2], [cx + nw * 0.55, ny + 1.2]],
                           0.85)
    geo['nose_wings'] = np.stack([
        proj([[cx - nw, ny - 3], [cx - nw * 1.05, ny], [cx - nw * 0.6, ny + 2]], 0.7),
        proj([[cx + nw, ny - 3], [cx + nw * 1.05, ny], [cx + nw * 0.6, ny + 2]], 0.7)
    ])
    geo['nose_bridge'] = np.stack([
        proj([[cx - 3.5, ey + 2], [cx - nw * 0.8, ny - 4]], 0.8),
        proj([[cx + 3.5, ey + 2], [cx + nw * 0.8, ny - 4]], 0.8)
    ])

    my, mw = p['mouth_y'], p['mouth_half_width']
    smile = nuis.smile
    mw_e = mw * (1 + 0.12 * smile)
    open_ = nuis.mouth_open * 5.0
    mt = np.linspace(-1, 1, 15)
    mx = cx + mw_e * mt
    corner_lift = 2.5 * smile
    centre_line = my - corner_lift * mt**2 + 0.8 * smile
    ul = p['upper_lip'] * (1 - 0.3 * smile)
    ll = p['lower_lip']
    bow = 0.8 * np.exp(-((mt * 5)**2))  # the cupid's bow dip
    upper_top = centre_line - ul * (1 - mt**2) + bow - open_ * 0.3 * (1 - mt**2)
    gap_top = centre_line - open_ * 0.3 * (1 - mt**2)
    gap_bot = centre_line + open_ * 0.7 * (1 - mt**2)
    lower_bot = gap_bot + ll * (1 - mt**2)
    geo['upper_lip'] = proj(np.concatenate([np.stack([mx, upper_top], 1),
                                            np.stack([mx[::-1], gap_top[::-1]], 1)]),
                            0.55)
    geo['lower_lip'] = proj(np.concatenate([np.stack([mx, gap_bot], 1),
                                            np.stack([mx[::-1], lower_bot[::-1]], 1)]),
                            0.55)
    geo['mouth_gap'] = proj(np.concatenate([np.stack([mx, gap_top], 1),
                                            np.stack([mx[::-1], gap_bot[::-1]], 1)]),
                            0.55)
    geo['mouth_line'] = proj(np.stack([mx, centre_line], 1), 0.55)
    corners = proj([[cx - mw_e, my - corner_lift + 0.8 * smile],
                    [cx + mw_e, my - corner_lift + 0.8 * smile]], 0.55)
    eyes = np.stack([geo['eye_l'].mean(0), geo['eye_r'].mean(0)])
    geo['landmarks'] = np.concatenate([eyes, nose_tip[None], corners]).astype(
        np.float32)
    ear_y = (ey + ny) / 2
    ear_half = np.interp(ear_y, [cheek - 1, cheek], [a, a]) - 1.0
    geo['ears'] = np.array([[cx - ear_half - 0.3 * yaw, ear_y],
                            [cx + ear_half - 0.3 * yaw, ear_y]], np.float32)
    geo.update(
        cx=np.float32(cx - 0.3 * yaw),
        head_half_width=np.float32(a),
        cheek_y=np.float32(cheek),
        chin_y=np.float32(chin - 0.3 * pitch),
        head_top=np.float32(top),
        ear_y=np.float32(ear_y))
    return geo


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, shift).

    Args:
        src (numpy.ndarray): [N,2] source points.
        dst (numpy.ndarray): [N,2] destination points.

    Returns:
        numpy.ndarray: float64 [2,3] matrix M with ``dst ~ M @ [x, y, 1]``.

    Examples:
        >>> pts = np.array([[0., 0.], [1., 0.], [0., 1.]])
        >>> np.allclose(similarity_transform(pts, 2 * pts + 3)[:, 2], 3)
        True
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / s0.var(0).sum()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def _affine_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    return (pts @ m[:, :2].T + m[:, 2]).astype(np.float32)


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """Affine ``outer(inner(x))`` of two [2,3] matrices."""
    a = np.vstack([outer, [0, 0, 1]])
    b = np.vstack([inner, [0, 0, 1]])
    return (a @ b)[:2]


def smooth_noise(rng: np.random.Generator, size: int, sigma: float,
                 channels: int = 1) -> np.ndarray:
    """Zero-mean, unit-std low-frequency noise field [size,size(,channels)]."""
    shape = (size, size) if channels == 1 else (size, size, channels)
    f = rng.standard_normal(shape).astype(np.float32)
    f = cv2.GaussianBlur(f, (0, 0), sigma)
    f -= f.mean()
    return f / (f.std() + 1e-6)


def identity_texture(ident: FaceIdentity) -> np.ndarray:
    """The person's skin/hair texture field [CANVAS, CANVAS], fixed across images."""
    rng = np.random.default_rng(ident.texture_seed)
    return (0.6 * smooth_noise(rng, CANVAS, 1.2) +
            0.4 * smooth_noise(rng, CANVAS, 4.0)).astype(np.float32)


def _hair_colour(ident: FaceIdentity) -> np.ndarray:
    return _palette(_HAIR, ident.hair_tone)


def _skin_colour(ident: FaceIdentity) -> np.ndarray:
    skin = _palette(SKIN, ident.skin_tone).copy()
    hue = ident.skin_hue
    skin += np.array([6.0, -4.0, 2.0]) * max(hue, 0) * 2 + np.array(
        [0.0, 5.0, -8.0]) * max(-hue, 0) * 2
    return np.clip(skin, 0, 255)


def _draw_hair(layer: np.ndarray, alpha: np.ndarray, ident: FaceIdentity,
               geo: Dict[str, np.ndarray], back: bool) -> None:
    """Hair behind the head (``back``) or on top of it."""
    style = ident.hair_style
    colour = tuple(float(c) for c in _hair_colour(ident))
    cx, a = float(geo['cx']), float(geo['head_half_width'])
    top, cheek = float(geo['head_top']), float(geo['cheek_y'])
    vol = ident.hair_volume
    if back:
        if style == 3:  # long hair falls behind the shoulders
            poly = np.array([[cx - a - vol, cheek], [cx - a - vol * 1.2, 150],
                             [cx + a + vol * 1.2, 150], [cx + a + vol, cheek]])
            fill(layer, poly, colour)
            fill(alpha, poly, 1.0)
            ellipse(layer, (cx, cheek), (a + vol, cheek - top + vol), 0, colour)
            ellipse(alpha, (cx, cheek), (a + vol, cheek - top + vol), 0, 1.0)
        if style == 5:  # a bun on top
            ellipse(layer, (cx, top - 2), (12 + vol, 9 + vol * 0.5), 0, colour)
            ellipse(alpha, (cx, top - 2), (12 + vol, 9 + vol * 0.5), 0, 1.0)
        return
    ear_y = float(geo['ear_y'])
    # Hair only exists above this row: work on that band of the canvas.
    rows = int(np.clip(ear_y + 14 + MARGIN, 1, CANVAS))
    xs, ys = GRID[0][:rows], GRID[1][:rows]
    v = vol * (0.35 if style in (0, 1, 5) else 1.0)
    # outer boundary of the hair: the skull ellipse grown by the volume
    rx, ry = a + v, (cheek - top) + v
    r = ((xs - cx) / rx)**2 + ((ys - cheek) / ry)**2
    if style == 4:  # curly: a bumpy outline
        ang = np.arctan2(ys - cheek, xs - cx)
        r = r * (1 + 0.06 * np.sin(14 * ang))
    outer = (r <= 1.0) & (ys < ear_y + (12 if style in (3, 4) else 0))
    hl = ident.hairline + ident.hair_part * (xs - cx) * 0.12 - 5 * (
        (xs - cx) / a)**2
    if style == 2:  # fringe down to the brows, cut unevenly
        hl = float(geo['brow_y']) - 3 + 1.5 * np.sin(xs * 0.8 + ident.hairline)
    side = np.abs(xs - cx) > 0.86 * a
    window = (ys >= hl) & ~(side & (ys < ear_y - 2))
    hair = outer & ~window
    if style == 0:
        a_val = 0.45
    else:
        a_val = 1.0
    m = hair.astype(np.float32) * a_val
    m = cv2.GaussianBlur(m, (0, 0), 0.7)
    band = layer[:rows]
    band *= (1 - m)[..., None]
    band += m[..., None] * np.asarray(colour, np.float32)
    np.maximum(alpha[:rows], m, out=alpha[:rows])


def _draw_face(ident: FaceIdentity, nuis: Nuisance, geo: Dict[str, np.ndarray],
               texture: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Person layer (float32 RGB) and its alpha (float32 0..1) on the canvas."""
    p = ident.params
    layer = np.zeros((CANVAS, CANVAS, 3), np.float32)
    alpha = np.zeros((CANVAS, CANVAS), np.float32)
    skin = _skin_colour(ident)
    skin_t = tuple(float(c) for c in skin)
    cx, a = float(geo['cx']), float(geo['head_half_width'])
    chin = float(geo['chin_y'])

    _draw_hair(layer, alpha, ident, geo, back=True)
    # shoulders in the image's clothes, then the neck in shadow
    ellipse(layer, (cx, chin + 44), (a * 1.9, 30), 0, nuis.clothes_colour)
    ellipse(alpha, (cx, chin + 44), (a * 1.9, 30), 0, 1.0)
    neck = np.array([[cx - 0.52 * a, chin - 18], [cx - 0.55 * a, chin + 25],
                     [cx + 0.55 * a, chin + 25], [cx + 0.52 * a, chin - 18]])
    fill(layer, neck, tuple(float(c) * 0.78 for c in skin))
    fill(alpha, neck, 1.0)
    for (ex, ey), sign in zip(geo['ears'], (-1, 1)):
        size = p['ear_size']
        ellipse(layer, (ex + sign * 2, ey), (size * 0.42, size), 0,
                tuple(float(c) * 0.9 for c in skin))
        ellipse(alpha, (ex + sign * 2, ey), (size * 0.42, size), 0, 1.0)
        ellipse(layer, (ex + sign * 2.5, ey), (size * 0.18, size * 0.6), 0,
                tuple(float(c) * 0.7 for c in skin))
    fill(layer, geo['head'], skin_t)
    fill(alpha, geo['head'], 1.0)

    # blush on the cheeks, under the eyes
    if p['blush'] > 0.05:
        bl = np.zeros((CANVAS, CANVAS), np.float32)
        for ex, ey in geo['landmarks'][:2]:
            ellipse(bl, (ex, ey + 14), (8, 5), 0, float(p['blush']) * 0.35)
        bl = cv2.GaussianBlur(bl, (0, 0), 3.0)
        layer[..., 1] *= 1 - bl * 0.5
        layer[..., 2] *= 1 - bl * 0.4

    hair_col = _hair_colour(ident)
    fh = ident.facial_hair
    if fh in (1, 3):  # stubble or beard over the jaw
        xs, ys = GRID
        head_mask = np.zeros((CANVAS, CANVAS), np.uint8)
        fill(head_mask, geo['head'], 1)
        top_line = float(geo['landmarks'][2, 1]) + 6 + 6 * (fh == 1)
        beard = (head_mask > 0) & (ys > top_line + 0.004 * (xs - cx)**2 * 0)
        beard &= (np.abs(xs - cx) > 0.55 * a) | (ys > top_line + 5)
        m = beard.astype(np.float32) * (0.8 if fh == 3 else 0.3)
        m *= np.clip(1 + 0.5 * texture, 0, 2)
        m = cv2.GaussianBlur(m, (0, 0), 1.2 if fh == 3 else 2.0)
        for c in range(3):
            layer[..., c] = layer[..., c] * (1 - m) + hair_col[c] * 0.8 * m

    lip = skin * (1 - 0.35 * p['lip_red']) + np.array([170, 60, 70]) * 0.35 * p[
        'lip_red']
    dark_lip = tuple(float(c) for c in lip * 0.45)
    if nuis.mouth_open > 0.05:
        fill(layer, geo['mouth_gap'], (40, 20, 22))
        # teeth: the upper part of the open mouth
        gap = geo['mouth_gap']
        teeth = gap.copy()
        n = len(gap) // 2
        teeth[n:, 1] = np.minimum(gap[n:, 1], gap[:n][::-1, 1] + 2.0)
        fill(layer, teeth, (228, 222, 210))
    fill(layer, geo['upper_lip'], tuple(float(c) for c in lip * 0.9))
    fill(layer, geo['lower_lip'], tuple(float(c) for c in lip))
    line(layer, geo['mouth_line'], dark_lip, 1)
    if fh == 2 or fh == 3:  # moustache
        ml = geo['upper_lip'][:15].copy()
        must = np.concatenate([ml + [0, -0.5], (ml + [0, -4.5])[::-1]])
        fill(layer, must, tuple(float(c) * 0.85 for c in hair_col))

    # nose: bridge shading, wings and nostrils
    shade = tuple(float(c) * (1 - 0.18 * p['nose_bridge']) for c in skin)
    for seg in geo['nose_bridge']:
        line(layer, seg, shade, 1)
    # the nose casts a soft shadow below its tip and on the side away from the light
    ntx, nty = geo['nose_tip']
    ellipse(layer, (ntx, nty + 2.5), (p['nose_half_width'] * 0.9, 2.0), 0,
            tuple(float(c) * 0.82 for c in skin))
    away = -1.0 if nuis.light_azimuth > 0 else 1.0
    bridge = geo['nose_bridge'][0 if away < 0 else 1]
    side = np.array([bridge[0], bridge[1], [ntx + away * 1.0, nty],
                     [ntx + away * 0.3, bridge[0, 1] + 3]])
    fill(layer, side, tuple(float(c) * (0.97 - 0.1 * abs(nuis.light_azimuth))
                            for c in skin))
    for wing in geo['nose_wings']:
        line(layer, wing, tuple(float(c) * 0.72 for c in skin), 1)
    for nx, ny in geo['nostrils']:
        ellipse(layer, (nx, ny), (p['nostril_size'] * 1.2, p['nostril_size'] * 0.7),
                0, tuple(float(c) * 0.38 for c in skin))

    # eyes: white, iris clipped to the lids, pupil, catch-light, lid line
    iris_col = _palette(_IRIS, p['iris_hue'])
    for name in ('l', 'r'):
        poly = geo['eye_' + name]
        # Work in a small window around the eye: full-canvas layers cost more than
        # the whole rest of the face.
        x0, y0 = np.floor(poly.min(0) + MARGIN).astype(int) - 2
        x1, y1 = np.ceil(poly.max(0) + MARGIN).astype(int) + 3
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, CANVAS), min(y1, CANVAS)
        off = np.array([x0, y0], np.float32)
        emask = np.zeros((y1 - y0, x1 - x0), np.float32)
        fill(emask, poly - off, 1.0)
        ix, iy, ir = geo['iris_' + name]
        ix, iy = ix - x0, iy - y0
        eye = np.empty((y1 - y0, x1 - x0, 3), np.float32)
        eye[:] = (232, 226, 220)
        ellipse(eye, (ix, iy), (ir, ir), 0, tuple(float(c) for c in iris_col))
        ellipse(eye, (ix, iy), (ir * 0.42, ir * 0.42), 0, (12, 10, 10))
        ellipse(eye, (ix + 0.8 * np.sin(nuis.light_azimuth) + 0.6, iy - 0.8),
                (0.6, 0.6), 0, (250, 250, 250))
        win = layer[y0:y1, x0:x1]
        win[:] = win * (1 - emask[..., None]) + eye * emask[..., None]
        n = len(poly) // 2
        line(layer, poly[:n], (30, 24, 22), 1)
        line(layer, poly[:n] + [0, -2.2], tuple(float(c) * 0.8 for c in skin), 1)
        brow_col = tuple(float(c) * 0.75 for c in hair_col)
        fill(layer, geo['brow_' + name], brow_col)

    # marks, fixed per person: positions come from the texture seed
    mrng = np.random.default_rng(ident.texture_seed + 1)
    if ident.marks == 1:  # freckles over nose and cheeks
        for _ in range(int(mrng.integers(18, 40))):
            x = cx + mrng.normal(0, 12)
            y = float(geo['nose_tip'][1]) - 6 + mrng.normal(0, 4)
            ellipse(layer, (x, y), (0.7, 0.7), 0,
                    tuple(float(c) * 0.72 for c in skin))
    elif ident.marks == 2:
        for _ in range(int(mrng.integers(1, 3))):
            x = cx + mrng.uniform(-0.7, 0.7) * a
            y = mrng.uniform(40, 100)
            ellipse(layer, (x, y), (1.3, 1.3), 0, (60, 40, 32))
    elif ident.marks == 3:  # a pale scar across one cheek or brow
        x0 = cx + mrng.uniform(-0.6, 0.6) * a
        y0 = mrng.uniform(35, 95)
        ang = mrng.uniform(0, np.pi)
        seg = np.array([[x0, y0], [x0 + 9 * np.cos(ang), y0 + 9 * np.sin(ang)]])
        line(layer, seg, tuple(min(255.0, float(c) * 1.15 + 10) for c in skin), 1)

    _draw_hair(layer, alpha, ident, geo, back=False)
    # skin pores and hair strands: one fixed field per person
    layer *= (1.0 + p['skin_texture'] * texture)[..., None]
    return layer, alpha


def shading(geo: Dict[str, np.ndarray], nuis: Nuisance) -> np.ndarray:
    """Per-pixel RGB light [CANVAS,CANVAS,3] of a Lambertian head ellipsoid."""
    # Light varies slowly: evaluate it on every other pixel and interpolate.
    xs, ys = GRID[0][::2, ::2], GRID[1][::2, ::2]
    cx = float(geo['cx'])
    top, chin = float(geo['head_top']), float(geo['chin_y'])
    cy = (top + chin) / 2
    u = (xs - cx) / (float(geo['head_half_width']) * 1.1)
    v = (ys - cy) / ((chin - top) / 2 * 1.1)
    nz = np.sqrt(np.clip(1 - u * u - v * v, 0, 1))
    norm = np.sqrt(u * u + v * v + nz * nz) + 1e-6
    az, el = nuis.light_azimuth, nuis.light_elevation
    lx, ly, lz = np.sin(az) * np.cos(el), -np.sin(el), np.cos(az) * np.cos(el)
    lam = np.clip((u * lx + v * ly + nz * lz) / norm, 0, 1)
    light = (nuis.ambient + nuis.light_strength * lam).astype(np.float32)
    light = cv2.resize(light, (CANVAS, CANVAS), interpolation=cv2.INTER_LINEAR)
    return light[..., None] * np.asarray(nuis.light_colour, np.float32)


def _background(nuis: Nuisance, size: Tuple[int, int]) -> np.ndarray:
    h, w = size
    rng = np.random.default_rng(nuis.seed)
    c = nuis.background_colours
    ys = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    xs = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    kind = nuis.background
    if kind == 0:  # plain wall with a vertical gradient
        bg = c[0] * (1 - ys) + c[1] * ys + 0 * xs
    elif kind == 1:  # two surfaces meeting at a random column
        edge = rng.uniform(0.2, 0.8)
        bg = np.where(xs < edge, c[0], c[1]) + 0 * ys
    elif kind == 2:  # out-of-focus clutter
        f = smooth_noise(rng, max(h, w), max(h, w) / 12, 3)[:h, :w]
        bg = c[0] + 40 * f
    else:  # shelves / blinds: soft stripes
        freq = rng.uniform(6, 16)
        s = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (ys if rng.random() < 0.5 else xs))
        bg = c[0] * s + c[2] * (1 - s) + 0 * xs + 0 * ys
    return np.clip(np.broadcast_to(bg, (h, w, 3)), 0, 255).astype(np.float32)


def _camera(img: np.ndarray, nuis: Nuisance) -> np.ndarray:
    """White balance, exposure, low resolution and blur: the same for every layer."""
    img = img * np.asarray(nuis.white_balance, np.float32)
    img = (img - 128.0) * nuis.contrast + 128.0 + nuis.brightness
    h, w = img.shape[:2]
    if nuis.lowres < 0.98:
        small = (max(8, int(w * nuis.lowres)), max(8, int(h * nuis.lowres)))
        img = cv2.resize(cv2.resize(img, small, interpolation=cv2.INTER_AREA), (w, h),
                         interpolation=cv2.INTER_LINEAR)
    if nuis.blur > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), nuis.blur)
    return img


def render_face(ident: FaceIdentity,
                nuis: Nuisance,
                occlusion: str = 'none',
                occ_rng: Optional[np.random.Generator] = None,
                out_size: Tuple[int, int] = (112, 112),
                post_affine: Optional[np.ndarray] = None,
                texture: Optional[np.ndarray] = None,
                style: str = 'A') -> RenderedFace:
    """Render one image of a person, optionally occluded.

    Args:
        ident (FaceIdentity): The person.
        nuis (Nuisance): The image's nuisance (:func:`sample_nuisance`).
        occlusion (str): ``'none'``, a key of :data:`.occluders.OCCLUDERS` or of
            :data:`.heldout.HELDOUT_OCCLUDERS` (held-out sets only).
        occ_rng (numpy.random.Generator, optional): Draws the occluder's shape and
            colour; required unless ``occlusion == 'none'``.
        out_size (tuple[int, int]): Output (height, width). Defaults to 112x112.
        post_affine (numpy.ndarray, optional): [2,3] affine applied after alignment,
            e.g. to place the aligned face in a larger loose crop.
        texture (numpy.ndarray, optional): The person's texture field
            (:func:`identity_texture`), passed in to reuse it across images.
        style (str): Face style, ``'A'`` (training and test sets) or ``'B'``
            (held-out sets: :func:`.heldout.restyle_identity` proportions and
            :func:`.heldout.style_b_finish` palette and line work). Defaults to
            ``'A'``.

    Returns:
        RenderedFace: Image, clean image, visibility mask and landmarks.

    Examples:
        >>> from oaml_mm.synthface.identity import sample_identities, stream_rng
        >>> person = sample_identities(1, seed=0)[0]
        >>> out = render_face(person, sample_nuisance(stream_rng(0, 9), 0.5))
        >>> out.image.shape, int(out.visibility.min())
        ((112, 112, 3), 1)
    """
    if style not in FACE_STYLES:
        raise ValueError(f'unknown face style {style!r}; expected one of '
                         f'{FACE_STYLES}')
    if texture is None:
        texture = identity_texture(ident)
    if style == 'B':
        ident = restyle_identity(ident)
    geo = face_geometry(ident, nuis)
    layer, alpha = _draw_face(ident, nuis, geo, texture)
    if style == 'B':
        layer = style_b_finish(layer, alpha)
    light = shading(geo, nuis)
    layer *= light

    # Alignment as a real pipeline does it: fit the detected (noisy) landmarks to the
    # template, then leave a small residual roll/scale/shift.
    detected = geo['landmarks'] + MARGIN + nuis.landmark_noise
    m = similarity_transform(detected, ARCFACE_TEMPLATE)
    centre = ARCFACE_TEMPLATE.mean(0)
    jitter = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])),
                                     nuis.roll, nuis.scale)
    jitter[:, 2] += nuis.shift
    m = _compose(jitter, m)
    if post_affine is not None:
        m = _compose(np.asarray(post_affine, np.float64), m)
    h, w = out_size
    warp = dict(dsize=(w, h), flags=cv2.INTER_LINEAR)
    layer_o = cv2.warpAffine(layer, m, borderMode=cv2.BORDER_CONSTANT, **warp)
    alpha_o = cv2.warpAffine(alpha, m, borderMode=cv2.BORDER_CONSTANT, **warp)
    bg = _background(nuis, (h, w))
    clean = bg * (1 - alpha_o[..., None]) + layer_o * alpha_o[..., None]
    landmarks = _affine_points(m, geo['landmarks'] + MARGIN)

    noise = np.random.default_rng(nuis.seed + 7).standard_normal(
        (h, w, 3), dtype=np.float32) * np.float32(nuis.noise)
    clean_u8 = np.clip(np.rint(_camera(clean, nuis) + noise), 0, 255).astype(np.uint8)
    if occlusion == 'none':
        return RenderedFace(clean_u8, clean_u8, np.ones((h, w), np.uint8), landmarks,
                            'none')
    draw = OCCLUDERS.get(occlusion) or HELDOUT_OCCLUDERS.get(occlusion)
    if draw is None:
        raise ValueError(f'unknown occlusion type {occlusion!r}; expected one of '
                         f'{sorted(OCCLUDERS) + sorted(HELDOUT_OCCLUDERS)}')
    occ_rgb, occ_mask = draw(ident, geo, occ_rng)
    occ_rgb = occ_rgb * light
    occ_o = cv2.warpAffine(occ_rgb, m, borderMode=cv2.BORDER_REPLICATE, **warp)
    cover = cv2.warpAffine(occ_mask, m, borderMode=cv2.BORDER_CONSTANT,
                           **warp) >= 0.5
    occ_u8 = np.clip(np.rint(_camera(occ_o, nuis) + noise), 0, 255).astype(np.uint8)
    image = np.where(cover[..., None], occ_u8, clean_u8)
    return RenderedFace(image, clean_u8, (~cover).astype(np.uint8), landmarks,
                        occlusion)


def encode_jpeg(image_rgb: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an RGB uint8 image (4:2:0, baseline, deterministic)."""
    ok, buf = cv2.imencode('.jpg', cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError('OpenCV could not encode a JPEG')
    return buf.tobytes()
