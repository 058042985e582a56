"""Held-out SynthFace variation: occluders and a face style training never sees.

The training data (``train/``, ``occluded/``) and the test sets (``val/clean``,
``masked``, ``occluded``) use the occluders of :mod:`.occluders` and the face style of
:mod:`.render` ("style A"). A model can learn those exact shapes. The held-out sets
(``val/heldout_*.bin``, docs/synthface.md, "Held-out occluders and faces") measure
whether occlusion awareness generalises, so they use

* occluder families drawn only here (:data:`HELDOUT_OCCLUDERS`): everyday objects
  held in front of the face, textured blobs, bands over the eyes, other scarf and
  hand geometry; and
* a second face style ("style B"): other proportions (:func:`restyle_identity`),
  palette and line work (:func:`style_b_finish`).

Every occluder follows the contract of :mod:`.occluders`: it returns the occluder's
colour everywhere and a [0, 1] coverage mask on the canonical canvas, so
:func:`.render.render_face` returns the exact visibility mask of the pixels it did not
replace. Nothing here is imported by the training occluders, and style A is rendered
exactly as before.
"""
from typing import Callable, Dict, Tuple

import cv2
import numpy as np

from .canvas import CANVAS, GRID, SKIN, ellipse, fill, line
from .identity import CONTINUOUS_RANGES, FaceIdentity
from .occluders import _cloth, _pick_cloth

__all__ = ['HELDOUT_OCCLUSION_TYPES', 'HELDOUT_OCCLUDERS', 'FACE_STYLES',
           'draw_object', 'draw_texture_patch', 'draw_eye_band', 'draw_scarf_alt',
           'draw_hand_alt', 'restyle_identity', 'style_b_finish']

Layer = Tuple[np.ndarray, np.ndarray]
Geometry = Dict[str, np.ndarray]

#: Face styles :func:`.render.render_face` draws: ``'A'`` (training and test sets),
#: ``'B'`` (held-out sets only).
FACE_STYLES = ('A', 'B')


def _skin(rng: np.random.Generator) -> np.ndarray:
    pos = rng.uniform(0, 1) * (len(SKIN) - 1)
    i = min(int(pos), len(SKIN) - 2)
    return SKIN[i] * (1 - (pos - i)) + SKIN[i + 1] * (pos - i)


def _texture(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """A surface: plain, noise, stripes or checks of two colours around ``base``."""
    xs, ys = GRID
    second = np.clip(base * rng.uniform(0.4, 1.6) + rng.normal(0, 40, 3), 0, 255)
    kind = rng.choice(4)
    if kind == 0:
        sel = np.zeros_like(xs)
    elif kind == 1:  # smooth noise
        noise = cv2.GaussianBlur(rng.standard_normal(xs.shape).astype(np.float32),
                                 (0, 0), rng.uniform(1.5, 4.0))
        sel = np.clip(0.5 + noise / (3 * noise.std() + 1e-6), 0, 1)
    elif kind == 2:  # stripes at any angle
        ang = rng.uniform(0, np.pi)
        f = rng.uniform(0.3, 0.9)
        sel = (np.sin(f * (np.cos(ang) * xs + np.sin(ang) * ys)) > 0).astype(
            np.float32)
    else:  # checker
        f = rng.uniform(0.25, 0.6)
        sel = ((np.sin(f * xs) > 0) ^ (np.sin(f * ys) > 0)).astype(np.float32)
    rgb = base[None, None] * (1 - sel[..., None]) + second[None, None] * sel[..., None]
    return rgb.astype(np.float32)


def _rotated_rect(centre: np.ndarray, w: float, h: float, angle: float) -> np.ndarray:
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    pts = np.array([[-w, -h], [w, -h], [w, h], [-w, h]], np.float64) / 2
    return np.stack([c * pts[:, 0] - s * pts[:, 1], s * pts[:, 0] + c * pts[:, 1]],
                    1) + centre


def draw_object(ident: FaceIdentity, geo: Geometry, rng: np.random.Generator) -> Layer:
    """An everyday object in front of the face: a phone, a cup, a book or a microphone.

    Each has its own outline (rounded slab, tapered cup with a handle, open book, ball
    on a stick), its own surface texture and is placed over a random part of the face.
    """
    lm = geo['landmarks']
    cx = float(geo['cx'])
    targets = [lm[2], lm[3:5].mean(0), lm[0], lm[1],
               np.array([cx, float(geo['chin_y']) - 8])]
    centre = targets[int(rng.integers(len(targets)))] + rng.normal(0, 5, 2)
    angle = rng.uniform(-35, 35)
    mask = np.zeros((CANVAS, CANVAS), np.float32)
    kind = rng.choice(4)
    if kind == 0:  # phone: dark rounded slab with a lit screen
        w, h = rng.uniform(24, 32), rng.uniform(44, 58)
        poly = _rotated_rect(centre, w, h, angle)
        fill(mask, poly, 1.0)
        for p in poly:  # rounded corners read as a phone
            ellipse(mask, p + (centre - p) * 0.08, (3, 3), 0, 1.0)
        rgb = np.empty((CANVAS, CANVAS, 3), np.float32)
        rgb[:] = np.array([[20, 20, 24], [200, 200, 205], [60, 70, 120],
                           [190, 60, 60]], np.float32)[rng.integers(4)]
        screen = np.zeros((CANVAS, CANVAS), np.float32)
        fill(screen, _rotated_rect(centre, w - 5, h - 9, angle), 1.0)
        glow = _texture(rng, np.clip(rng.uniform(60, 240, 3), 0, 255).astype(
            np.float32))
        rgb = np.where(screen[..., None] > 0.5, glow, rgb).astype(np.float32)
    elif kind == 1:  # cup or mug with a handle
        w, h = rng.uniform(26, 36), rng.uniform(30, 42)
        top_w = w * rng.uniform(1.0, 1.25)
        c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        local = np.array([[-top_w / 2, -h / 2], [top_w / 2, -h / 2], [w / 2, h / 2],
                          [-w / 2, h / 2]])
        poly = np.stack([c * local[:, 0] - s * local[:, 1],
                         s * local[:, 0] + c * local[:, 1]], 1) + centre
        fill(mask, poly, 1.0)
        side = 1 if rng.random() < 0.5 else -1
        handle = centre + np.array([c, s]) * side * (w / 2 + 4)
        ellipse(mask, handle, (6, 9), angle, 1.0, thickness=3)
        rgb = _texture(rng, np.clip(rng.uniform(30, 250, 3), 0, 255).astype(
            np.float32))
    elif kind == 2:  # open book: two pages and a spine
        w, h = rng.uniform(50, 70), rng.uniform(34, 46)
        poly = _rotated_rect(centre, w, h, angle)
        fill(mask, poly, 1.0)
        rgb = np.empty((CANVAS, CANVAS, 3), np.float32)
        paper = np.array([238, 232, 214], np.float32) * rng.uniform(0.85, 1.0)
        rgb[:] = paper
        xs, ys = GRID
        text_lines = (np.sin(rng.uniform(0.9, 1.3) * ys) > 0.6)[..., None]
        rgb = np.where(text_lines, paper * 0.55, rgb).astype(np.float32)
        c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        spine = np.array([centre - np.array([-s, c]) * h / 2,
                          centre + np.array([-s, c]) * h / 2])
        line(rgb, spine, (90.0, 60.0, 40.0), 2)
    else:  # microphone: a textured ball on a handle
        r = rng.uniform(10, 15)
        ellipse(mask, centre, (r, r), 0, 1.0)
        c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        stick = np.array([centre, centre + np.array([-s, c]) * 80])
        line(mask, stick, 1.0, int(rng.integers(7, 11)))
        rgb = np.empty((CANVAS, CANVAS, 3), np.float32)
        rgb[:] = (30, 30, 32)
        xs, ys = GRID
        grille = ((np.sin(1.4 * xs) * np.sin(1.4 * ys)) > 0.2).astype(np.float32)
        ball = np.zeros((CANVAS, CANVAS), np.float32)
        ellipse(ball, centre, (r, r), 0, 1.0)
        metal = np.array([150, 150, 155], np.float32) * (0.7 + 0.3 * grille[..., None])
        rgb = np.where(ball[..., None] > 0.5, metal, rgb).astype(np.float32)
    return rgb, mask


def draw_texture_patch(ident: FaceIdentity, geo: Geometry,
                       rng: np.random.Generator) -> Layer:
    """One to three irregular blobs with a noise, stripe or checker texture."""
    cx = float(geo['cx'])
    a = float(geo['head_half_width'])
    top, chin = float(geo['head_top']), float(geo['chin_y'])
    mask = np.zeros((CANVAS, CANVAS), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        centre = np.array([cx + rng.uniform(-0.7, 0.7) * a,
                           rng.uniform(top + 25, chin - 10)])
        radius = rng.uniform(10, 24)
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        wobble = 1 + sum(rng.uniform(0, 0.25) * np.sin(k * t + rng.uniform(0, 6))
                         for k in (2, 3, 5))
        poly = np.stack([centre[0] + radius * wobble * np.cos(t),
                         centre[1] + radius * rng.uniform(0.6, 1.4) * wobble *
                         np.sin(t)], 1)
        fill(mask, poly, 1.0)
    rgb = _texture(rng, np.clip(rng.uniform(20, 240, 3), 0, 255).astype(np.float32))
    return rgb, mask


def draw_eye_band(ident: FaceIdentity, geo: Geometry,
                  rng: np.random.Generator) -> Layer:
    """Something over the eyes: a bandage, a visor, an eye patch or a hair fringe."""
    eyes = geo['landmarks'][:2]
    cx, a = float(geo['cx']), float(geo['head_half_width'])
    ey = float(eyes[:, 1].mean())
    mask = np.zeros((CANVAS, CANVAS), np.float32)
    kind = rng.choice(4)
    xs, ys = GRID
    if kind == 0:  # bandage: a wide light band, slightly tilted
        h = rng.uniform(7, 11)
        tilt = rng.uniform(-0.12, 0.12)
        centre_y = ey + rng.uniform(-2, 2) + tilt * (xs - cx)
        mask[:] = ((np.abs(ys - centre_y) < h) &
                   (np.abs(xs - cx) < a + 4)).astype(np.float32)
        rgb = _cloth(rng, np.array([235, 228, 215], np.float32) *
                     rng.uniform(0.85, 1.0), 0.08)
    elif kind == 1:  # visor: a tinted shield from temple to temple
        t = np.linspace(-1, 1, 21)
        h_top, h_bot = rng.uniform(8, 12), rng.uniform(8, 13)
        upper = np.stack([cx + (a + 3) * t, ey - h_top + 3 * t**2], 1)
        lower = np.stack([cx + (a + 3) * t[::-1], ey + h_bot - 4 * t[::-1]**2], 1)
        fill(mask, np.concatenate([upper, lower]), 1.0)
        tint = np.array([[40, 70, 140], [140, 40, 40], [30, 30, 30], [60, 120, 70]],
                        np.float32)[rng.integers(4)]
        grad = 0.6 + 0.4 * np.clip((ys - ey + 12) / 24, 0, 1)
        rgb = (tint[None, None] * grad[..., None] +
               50 * np.exp(-((xs + ys * 0.5 - rng.uniform(0, 60))**2) / 30.0)[...,
                                                                              None])
        rgb = rgb.astype(np.float32)
    elif kind == 2:  # eye patch over one eye and its strap
        ex, eyy = eyes[int(rng.integers(2))]
        ellipse(mask, (ex, eyy + 1), (rng.uniform(9, 12), rng.uniform(8, 11)), 0, 1.0)
        strap_y = eyy - rng.uniform(3, 7)
        line(mask, np.array([[cx - a - 3, strap_y - 6], [ex, eyy],
                             [cx + a + 3, strap_y - 6]]), 1.0, 2)
        rgb = np.empty((CANVAS, CANVAS, 3), np.float32)
        rgb[:] = np.array([[15, 15, 15], [60, 40, 30], [235, 230, 220]],
                          np.float32)[rng.integers(3)]
    else:  # hair fringe falling over the eyes: strands from the top of the head
        bottom = ey + rng.uniform(2, 8)
        top = float(geo['head_top'])
        n = int(rng.integers(9, 15))
        for k in range(n):
            x = cx - a + 2 * a * (k + rng.uniform(0, 1)) / n
            tip = np.array([x + rng.uniform(-6, 6), bottom + rng.uniform(-6, 3)])
            strand = np.array([[x - 5, top + 5], [x + 5, top + 5], tip])
            fill(mask, strand, 1.0)
        fill(mask, np.array([[cx - a, top], [cx + a, top], [cx + a, ey - 10],
                             [cx - a, ey - 10]]), 1.0)
        hair = np.array([[25, 20, 18], [90, 60, 35], [180, 140, 80], [120, 40, 25]],
                        np.float32)[rng.integers(4)]
        rgb = (hair[None, None] *
               (1 + 0.25 * np.sin(0.9 * xs + 0.2 * ys))[..., None]).astype(np.float32)
    return rgb, mask


def draw_scarf_alt(ident: FaceIdentity, geo: Geometry,
                   rng: np.random.Generator) -> Layer:
    """A cloth wrapped diagonally across the face, or a high collar up to the nose."""
    xs, ys = GRID
    cx, a = float(geo['cx']), float(geo['head_half_width'])
    nose_y = float(geo['nose_tip'][1])
    if rng.random() < 0.5:  # diagonal wrap: a band from one temple to the jaw
        slope = rng.uniform(0.4, 0.9) * (1 if rng.random() < 0.5 else -1)
        mid = nose_y + rng.uniform(-4, 10)
        width = rng.uniform(12, 20)
        dist = (ys - mid - slope * (xs - cx)) / np.sqrt(1 + slope**2)
        mask = (np.abs(dist) < width).astype(np.float32)
        colour = _pick_cloth(rng) if rng.random() < 0.4 else np.clip(
            rng.uniform(50, 230, 3), 0, 255).astype(np.float32)
        rgb = _cloth(rng, colour, 0.25)
    else:  # high collar: straight top edge from below the chin up to the nose
        top = nose_y + rng.uniform(-2, 6)
        mask = ((ys >= top) & (np.abs(xs - cx) < a + rng.uniform(10, 26))).astype(
            np.float32)
        colour = np.clip(rng.uniform(30, 220, 3), 0, 255).astype(np.float32)
        ribs = 1 + 0.2 * (np.sin(rng.uniform(0.8, 1.4) * xs) > 0)
        rgb = (colour[None, None] * ribs[..., None]).astype(np.float32)
        # a turned-down fold at the top edge
        fold = ((ys >= top) & (ys < top + rng.uniform(4, 7)))[..., None]
        rgb = np.where(fold, rgb * 0.75, rgb).astype(np.float32)
    return rgb, mask


def draw_hand_alt(ident: FaceIdentity, geo: Geometry,
                  rng: np.random.Generator) -> Layer:
    """Other hand geometry: a fist under the chin or on a cheek, both hands over the
    mouth, or a palm seen from the side across the face."""
    skin = _skin(rng)
    lm = geo['landmarks']
    cx = float(geo['cx'])
    mask = np.zeros((CANVAS, CANVAS), np.float32)
    rgb = np.empty((CANVAS, CANVAS, 3), np.float32)
    rgb[:] = skin
    dark = tuple(float(v) * 0.72 for v in skin)
    kind = rng.choice(3)
    if kind == 0:  # fist: a rounded block with knuckles, forearm downwards
        centre = [np.array([cx, float(geo['chin_y']) - 12]), lm[3] + [-4, -8],
                  lm[4] + [4, -8]][int(rng.integers(3))] + rng.normal(0, 3, 2)
        w, h = rng.uniform(28, 36), rng.uniform(24, 30)
        ellipse(mask, centre, (w / 2, h / 2), rng.uniform(-20, 20), 1.0)
        fill(mask, np.array([centre + [-9, 4], centre + [-13, 90],
                             centre + [13, 90], centre + [9, 4]]), 1.0)
        for k in range(4):
            x = centre[0] - w / 2 + w * (k + 0.5) / 4
            line(rgb, np.array([[x, centre[1] - h / 2 + 2],
                                [x, centre[1] - h / 2 + 8]]), dark, 1)
    elif kind == 1:  # both hands over the mouth, fingers up, side by side
        mouth = lm[3:5].mean(0) + rng.normal(0, 2, 2)
        for sign in (-1, 1):
            base = mouth + [sign * rng.uniform(7, 10), 8]
            ellipse(mask, base, (11, 14), 0, 1.0)
            for k in range(4):
                x = base[0] - 6 + 4 * k
                line(mask, np.array([[x, base[1] - 6],
                                     [x + sign * 1.5, base[1] - 6 -
                                      rng.uniform(14, 19)]]), 1.0, 5)
            fill(mask, np.array([base + [-8, 6], base + [-10, 90], base + [10, 90],
                                 base + [8, 6]]), 1.0)
        line(rgb, np.array([mouth + [0, -14], mouth + [0, 30]]), dark, 1)
    else:  # palm from the side: a long thin wedge across the face
        y = float(lm[2, 1]) + rng.uniform(-14, 12)
        side = 1 if rng.random() < 0.5 else -1
        x0 = cx - side * rng.uniform(0.3, 0.6) * float(geo['head_half_width'])
        thick = rng.uniform(11, 16)
        poly = np.array([[x0, y - thick * 0.4], [x0 + side * 90, y - thick],
                         [x0 + side * 90, y + thick], [x0, y + thick * 0.4]])
        fill(mask, poly, 1.0)
        ellipse(mask, (x0, y), (4, thick * 0.45), 0, 1.0)
        line(rgb, np.array([[x0, y], [x0 + side * 90, y + 2]]), dark, 1)
    return rgb, mask


#: Held-out occlusion types, in the order used by the data set files.
HELDOUT_OCCLUSION_TYPES = ('object', 'texture_patch', 'eye_band', 'scarf_alt',
                           'hand_alt')

HELDOUT_OCCLUDERS: Dict[str, Callable[[FaceIdentity, Geometry, np.random.Generator],
                                      Layer]] = {
    'object': draw_object,
    'texture_patch': draw_texture_patch,
    'eye_band': draw_eye_band,
    'scarf_alt': draw_scarf_alt,
    'hand_alt': draw_hand_alt,
}

# Style B's proportions: multiplicative (x) or additive (+) changes of the identity's
# parameters, pushing most of them to or past the edge of the training ranges.
_STYLE_B_SCALE = {'head_half_width': 1.07, 'eye_width': 1.2, 'eye_height': 1.25,
                  'iris_radius': 1.15, 'brow_thickness': 0.6, 'nose_half_width': 0.8,
                  'mouth_half_width': 0.82, 'upper_lip': 0.7, 'lower_lip': 0.75,
                  'ear_size': 1.15}
_STYLE_B_SHIFT = {'eye_y': 2.5, 'nose_y': -2.0, 'mouth_y': -3.0, 'chin_y': -4.0,
                  'cheek_y': 4.0, 'brow_gap': 1.5}


def restyle_identity(ident: FaceIdentity) -> FaceIdentity:
    """The identity with style B's proportions: bigger eyes set lower, a shorter
    lower face, a smaller nose and mouth, thinner brows.

    The map is fixed and one-to-one, so every person stays distinct from the others.

    Args:
        ident (FaceIdentity): A style-A identity.

    Returns:
        FaceIdentity: Same index, categories and texture seed, new parameters.
    """
    params = dict(ident.params)
    for name, factor in _STYLE_B_SCALE.items():
        params[name] = params[name] * factor
    for name, delta in _STYLE_B_SHIFT.items():
        params[name] = params[name] + delta
    for name in ('skin_tone', 'hair_tone', 'iris_hue'):
        lo, hi = CONTINUOUS_RANGES[name]
        params[name] = float(np.clip(params[name], lo, hi))
    return FaceIdentity(ident.index, params, dict(ident.categories),
                        ident.texture_seed)


def style_b_finish(layer: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Style B's palette and line work on the person layer.

    Colours are re-mixed (a cool, less saturated palette), shading is flattened into
    a few tone levels (cel shading) and the outline of the person and strong inner
    edges are inked in dark lines.

    Args:
        layer (numpy.ndarray): float32 [CANVAS, CANVAS, 3] person layer (RGB, 0..255).
        alpha (numpy.ndarray): float32 [CANVAS, CANVAS] its coverage.

    Returns:
        numpy.ndarray: float32 [CANVAS, CANVAS, 3], the restyled layer.
    """
    mix = np.array([[0.80, 0.12, 0.08], [0.10, 0.78, 0.12], [0.08, 0.22, 0.85]],
                   np.float32)
    out = layer @ mix.T + np.array([-6, 4, 14], np.float32)
    grey = out.mean(axis=2, keepdims=True)
    out = grey + 0.75 * (out - grey)
    levels = 14.0
    out = np.round(out / levels) * levels
    lum = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(lum, 70, 160) > 0
    outline = cv2.morphologyEx((alpha > 0.5).astype(np.uint8), cv2.MORPH_GRADIENT,
                               np.ones((3, 3), np.uint8)) > 0
    ink = (edges | outline)[..., None]
    out = np.where(ink, out * 0.35, out)
    return np.clip(out, 0, 255).astype(np.float32)
