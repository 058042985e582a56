"""Occluders for SynthFace, each with its exact coverage mask.

The occlusion types follow what OAML is meant to survive (docs/synthface.md: niqab
data with ground-truth masks, medical masks, hands, sunglasses, scarves). Every function
draws in the canonical canvas of :mod:`.render`, in aligned-frame coordinates, placed
from the face geometry of the image (:func:`.render.face_geometry`), and returns

* ``rgb``: float32 [CANVAS, CANVAS, 3], the occluder's colour *everywhere* (so that
  warping and blurring the layer never mixes in a foreign colour at its edges), and
* ``mask``: float32 [CANVAS, CANVAS] in [0, 1], where the occluder is.

:func:`.render.render_face` warps both with the image's alignment transform, thresholds
the mask at 0.5 and composites with that hard mask, so the visibility mask it returns is
exactly the set of pixels the occluder did not replace.
"""
from typing import Callable, Dict, Tuple

import cv2
import numpy as np

from .canvas import (CANVAS, GRID, SHIFT, SKIN, canvas_points, ellipse, fill,
                     line)
from .identity import FaceIdentity

__all__ = ['OCCLUSION_TYPES', 'OCCLUDERS', 'draw_niqab', 'draw_hand',
           'draw_sunglasses', 'draw_scarf', 'draw_medical_mask']

Layer = Tuple[np.ndarray, np.ndarray]
Geometry = Dict[str, np.ndarray]

_CLOTH_DARK = np.array([[14, 14, 16], [20, 22, 40], [46, 32, 26], [48, 48, 50],
                        [70, 22, 30], [34, 48, 34], [150, 140, 120],
                        [96, 96, 104]], np.float32)
_CLOTH_DARK_P = np.array([0.42, 0.12, 0.1, 0.1, 0.07, 0.06, 0.07, 0.06])
_MEDICAL = np.array([[150, 196, 226], [236, 238, 240], [30, 30, 34],
                     [232, 180, 196], [170, 176, 182]], np.float32)


def _cloth(rng: np.random.Generator, colour: np.ndarray,
           fold_strength: float = 0.18) -> np.ndarray:
    """A cloth layer: base colour with soft folds and weave noise."""
    xs, ys = GRID
    freq = rng.uniform(0.12, 0.3)
    phase = rng.uniform(0, 2 * np.pi)
    bend = rng.uniform(-0.08, 0.08)
    folds = np.sin(freq * xs + bend * ys + phase + 0.6 * np.sin(0.05 * ys))
    weave = rng.normal(0, 0.03, size=xs.shape).astype(np.float32)
    gain = 1.0 + fold_strength * folds + weave
    return (gain[..., None] * colour[None, None]).astype(np.float32)


def _pick_cloth(rng: np.random.Generator) -> np.ndarray:
    base = _CLOTH_DARK[rng.choice(len(_CLOTH_DARK), p=_CLOTH_DARK_P)]
    return np.clip(base + rng.normal(0, 6, 3), 0, 255).astype(np.float32)


def draw_niqab(ident: FaceIdentity, geo: Geometry,
               rng: np.random.Generator) -> Layer:
    """A niqab-style covering: cloth over head and face except an eye band.

    Shapes vary in the opening (rounded slot, almond, narrow slit, two eye holes; it
    shows the eyes and brows), its height and reach, the cloth's outline over the
    head, the colour (mostly black or dark) and the folds; a trim of another shade
    often edges the opening.
    """
    cx, a = float(geo['cx']), float(geo['head_half_width'])
    top, cheek = float(geo['head_top']), float(geo['cheek_y'])
    eyes = geo['landmarks'][:2]
    mask = np.zeros((CANVAS, CANVAS), np.float32)
    grow = rng.uniform(4, 12)
    ellipse(mask, (cx, cheek), (a + grow, cheek - top + grow + rng.uniform(0, 6)), 0,
            1.0)
    drape = np.array([[cx - a - grow, cheek], [cx - a - grow - rng.uniform(8, 30), 160],
                      [cx + a + grow + rng.uniform(8, 30), 160],
                      [cx + a + grow, cheek]])
    fill(mask, drape, 1.0)

    ey = float(eyes[:, 1].mean()) + rng.uniform(-1.5, 1.5)
    # The opening runs from just above the brows to the upper cheeks, as a niqab's
    # eye band does; an opening over the eyes alone left too little of the face for
    # any matcher (docs/synthface.md, "Data version 2").
    up = ey - float(geo['brow_y']) + rng.uniform(2, 6)
    down = rng.uniform(6, 11)
    reach = rng.uniform(9, 16)
    x0, x1 = float(eyes[0, 0]) - reach, float(eyes[1, 0]) + reach
    hole = np.zeros((CANVAS, CANVAS), np.float32)
    shape = rng.choice(4, p=[0.45, 0.35, 0.1, 0.1])
    if shape == 0:  # rounded slot
        r = rng.uniform(2, min(up, down))
        x0i, x1i = x0 + r, x1 - r
        fill(hole, np.array([[x0i, ey - up], [x1i, ey - up], [x1i, ey + down],
                             [x0i, ey + down]]), 1.0)
        fill(hole, np.array([[x0, ey - up + r], [x1, ey - up + r], [x1, ey + down - r],
                             [x0, ey + down - r]]), 1.0)
        for px, py in ((x0i, ey - up + r), (x1i, ey - up + r), (x0i, ey + down - r),
                       (x1i, ey + down - r)):
            ellipse(hole, (px, py), (r, r), 0, 1.0)
    elif shape == 1:  # almond: pointed ends
        t = np.linspace(0, 1, 24)
        xs = x0 + (x1 - x0) * t
        arc = np.sin(np.pi * t)**0.6
        poly = np.concatenate([np.stack([xs, ey - up * arc], 1),
                               np.stack([xs[::-1], ey + down * arc[::-1]], 1)])
        fill(hole, poly, 1.0)
    elif shape == 2:  # narrow slit
        h = rng.uniform(5.0, 8.0)
        fill(hole, np.array([[x0, ey - h], [x1, ey - h - rng.uniform(-1, 1)],
                             [x1, ey + h], [x0, ey + h]]), 1.0)
    else:  # two eye holes with cloth over the nose bridge
        for ex, eyy in eyes:
            ellipse(hole, (ex, eyy), (reach * 0.55 + 5, (up + down) / 2), 0, 1.0)
    if rng.random() < 0.5:
        # the cloth sags over the nose bridge
        ellipse(hole, (cx, ey + down + 1), (rng.uniform(2, 5), rng.uniform(2, 5)), 0,
                0.0)
    colour = _pick_cloth(rng)
    rgb = _cloth(rng, colour)
    if rng.random() < 0.6:  # trim around the opening
        trim = np.clip(colour * rng.uniform(0.5, 1.8) + rng.normal(0, 15, 3), 0, 255)
        edge = cv2.dilate(hole, np.ones((3, 3), np.uint8),
                          iterations=int(rng.integers(1, 3))) - hole
        rgb = rgb * (1 - edge[..., None]) + trim * edge[..., None]
    mask = np.clip(mask - hole, 0, 1)
    return rgb, mask


def draw_hand(ident: FaceIdentity, geo: Geometry, rng: np.random.Generator) -> Layer:
    """A hand over the mouth, a cheek, an eye or the chin, with its forearm."""
    tone = rng.uniform(0, 1)
    pos = tone * (len(SKIN) - 1)
    i = min(int(pos), len(SKIN) - 2)
    skin = SKIN[i] * (1 - (pos - i)) + SKIN[i + 1] * (pos - i)
    lm = geo['landmarks']
    targets = [lm[3:5].mean(0), lm[3] + [-6, -10], lm[4] + [6, -10], lm[0], lm[1],
               np.array([float(geo['cx']), float(geo['chin_y']) - 4])]
    tgt = targets[rng.choice(len(targets), p=[0.3, 0.14, 0.14, 0.11, 0.11, 0.2])]
    centre = tgt + rng.normal(0, 3, 2)
    angle = rng.uniform(-70, 70) + (180 if rng.random() < 0.15 else 0)
    s = rng.uniform(0.85, 1.2)
    c, sn = np.cos(np.radians(angle)), np.sin(np.radians(angle))

    def tr(pts):  # hand-local (fingers point to -y) -> aligned frame
        pts = np.asarray(pts, np.float64).reshape(-1, 2) * s
        return np.stack([c * pts[:, 0] - sn * pts[:, 1],
                         sn * pts[:, 0] + c * pts[:, 1]], 1) + centre

    mask = np.zeros((CANVAS, CANVAS), np.float32)
    rgb = np.empty((CANVAS, CANVAS, 3), np.float32)
    rgb[:] = skin
    dark = tuple(float(v) * 0.7 for v in skin)
    # forearm to the lower border, palm, four fingers, thumb
    arm = tr([[-9, 14], [-11, 90], [11, 90], [9, 14]])
    fill(mask, arm, 1.0)
    ellipse(mask, tr([0, 4])[0], (14 * s, 17 * s), angle, 1.0)
    finger_len = rng.uniform(16, 22)
    spread = rng.uniform(0.0, 0.12)
    for k, off in enumerate((-8.5, -3, 2.5, 8)):
        length = finger_len * (0.8 if k in (0, 3) else 1.0)
        ang = spread * (k - 1.5)
        base = np.array([off, -10.0])
        tip = base + length * np.array([np.sin(ang), -np.cos(ang)])
        seg = tr([base, tip])
        width = int(round(6.0 * s))
        cv2.line(mask, tuple(canvas_points(seg[0:1])[0]),
                 tuple(canvas_points(seg[1:2])[0]), 1.0,
                 width, cv2.LINE_8, SHIFT)
        if k > 0:  # the gap between two fingers reads as a dark line
            line(rgb, tr([[off - 2.75, -11], [off - 2.75 + length * ang * 0.5,
                                              -8 - length * 0.9]]), dark, 1)
    thumb = tr([[-12, 6], [-20, -10]])
    cv2.line(mask, tuple(canvas_points(thumb[0:1])[0]),
             tuple(canvas_points(thumb[1:2])[0]), 1.0,
             int(round(7 * s)), cv2.LINE_8, SHIFT)
    line(rgb, tr([[-8, 10], [-3, -4]]), tuple(float(v) * 0.85 for v in skin), 1)
    return rgb, mask


def draw_sunglasses(ident: FaceIdentity, geo: Geometry,
                    rng: np.random.Generator) -> Layer:
    """Sunglasses: two dark lenses, a frame, the bridge and the temple arms."""
    eyes = geo['landmarks'][:2]
    cx, a = float(geo['cx']), float(geo['head_half_width'])
    mask = np.zeros((CANVAS, CANVAS), np.float32)
    frame_col = [(15, 15, 15), (180, 150, 70), (90, 55, 30),
                 (200, 200, 205)][rng.choice(4, p=[0.5, 0.2, 0.2, 0.1])]
    tint = np.array([[20, 20, 22], [40, 30, 20], [20, 35, 25], [30, 30, 50],
                     [60, 40, 30]], np.float32)[rng.integers(0, 5)]
    kind = rng.choice(3)
    w, h = rng.uniform(10, 13), rng.uniform(7, 10)
    dy = rng.uniform(-0.5, 2.5)
    lenses = np.zeros((CANVAS, CANVAS), np.float32)
    for ex, ey in eyes:
        ey = ey + dy
        if kind == 0:  # round
            ellipse(lenses, (ex, ey), (w * 0.9, w * 0.85), 0, 1.0)
        elif kind == 1:  # rectangular
            fill(lenses, np.array([[ex - w, ey - h], [ex + w, ey - h],
                                   [ex + w * 0.9, ey + h], [ex - w * 0.9, ey + h]]),
                 1.0)
        else:  # aviator teardrop
            t = np.linspace(0, 2 * np.pi, 30)
            r = 1 + 0.25 * np.sin(t)
            fill(lenses,
                 np.stack([ex + w * np.cos(t), ey + h * 1.1 * r * np.sin(t)], 1), 1.0)
    thick = int(rng.integers(1, 4))
    frame = cv2.dilate(lenses, np.ones((3, 3), np.uint8), iterations=thick) - lenses
    lensmask = lenses.copy()
    for mm in (lenses, frame):
        np.maximum(mask, mm, out=mask)
    bridge = np.array([[eyes[0, 0] + w * 0.8, eyes[0, 1] + dy - 2],
                       [cx, eyes[:, 1].mean() + dy - 3.5],
                       [eyes[1, 0] - w * 0.8, eyes[1, 1] + dy - 2]])
    arms = [np.array([[eyes[0, 0] - w, eyes[0, 1] + dy - 2], [cx - a - 3,
                                                              eyes[0, 1] + dy]]),
            np.array([[eyes[1, 0] + w, eyes[1, 1] + dy - 2], [cx + a + 3,
                                                              eyes[1, 1] + dy]])]
    extra = np.zeros((CANVAS, CANVAS), np.float32)
    line(extra, bridge, 1.0, thick + 1)
    for arm in arms:
        line(extra, arm, 1.0, thick + 1)
    np.maximum(mask, extra, out=mask)

    xs, ys = GRID
    grad = 0.55 + 0.45 * np.clip((ys - float(eyes[:, 1].mean()) + 12) / 24, 0, 1)
    rgb = np.empty((CANVAS, CANVAS, 3), np.float32)
    rgb[:] = frame_col
    glass = tint[None, None] * grad[..., None]
    sheen = np.exp(-((xs - ys * 0.6 - rng.uniform(0, 40))**2) / 20.0)[..., None]
    glass = glass + 60 * sheen * rng.uniform(0.2, 1.0)
    rgb = np.where(lensmask[..., None] > 0.5, glass, rgb).astype(np.float32)
    return rgb, mask


def draw_scarf(ident: FaceIdentity, geo: Geometry, rng: np.random.Generator) -> Layer:
    """A scarf or bandana pulled up over the lower face (to the nose or the lips)."""
    xs, ys = GRID
    cx, a = float(geo['cx']), float(geo['head_half_width'])
    nose_y = float(geo['nose_tip'][1])
    top = nose_y + rng.uniform(-7, 9)
    droop = rng.uniform(-3, 8)
    wave = rng.uniform(0, 1.5)
    edge = top + droop * ((xs - cx) / a)**2 + wave * np.sin(xs * rng.uniform(0.2, 0.5))
    mask = ((ys >= edge) & (np.abs(xs - cx) < a + rng.uniform(6, 20))).astype(
        np.float32)
    # clear the under-arm corners: the scarf narrows towards the shoulders
    base = np.clip(rng.uniform(40, 230, 3), 0, 255).astype(np.float32)
    second = np.clip(rng.uniform(20, 240, 3), 0, 255).astype(np.float32)
    pattern = rng.choice(4, p=[0.4, 0.25, 0.2, 0.15])
    if pattern == 0:
        sel = np.zeros_like(xs)
    elif pattern == 1:  # stripes, horizontal or diagonal
        f = rng.uniform(0.25, 0.6)
        slope = rng.choice([0.0, 1.0, -1.0])
        sel = (np.sin(f * (ys + slope * xs)) > 0).astype(np.float32)
    elif pattern == 2:  # checks
        f = rng.uniform(0.2, 0.45)
        sel = ((np.sin(f * xs) > 0) ^ (np.sin(f * ys) > 0)).astype(np.float32)
    else:  # dots
        f = rng.uniform(0.35, 0.6)
        sel = ((np.sin(f * xs) * np.sin(f * ys)) > 0.6).astype(np.float32)
    colour = base * (1 - sel[..., None]) + second * sel[..., None]
    folds = 1 + 0.15 * np.sin(0.35 * ys + 0.1 * xs + rng.uniform(0, 6))
    rgb = (colour * folds[..., None]).astype(np.float32)
    return rgb, mask


def draw_medical_mask(ident: FaceIdentity, geo: Geometry,
                      rng: np.random.Generator) -> Layer:
    """A pleated surgical mask from the nose bridge to under the chin, ear loops."""
    cx, a = float(geo['cx']), float(geo['head_half_width'])
    lm = geo['landmarks']
    eye_y = float(lm[:2, 1].mean())
    nose_y = float(lm[2, 1])
    chin = float(geo['chin_y'])
    top = eye_y + rng.uniform(6, 11)
    side_top = nose_y - rng.uniform(0, 5)
    half = a * rng.uniform(0.78, 0.92)
    bottom = chin + rng.uniform(-4, 4)
    t = np.linspace(-1, 1, 21)
    upper = np.stack([cx + half * t, top + (side_top - top) * np.abs(t)**1.3], 1)
    lower = np.stack([cx + half * t[::-1] * 0.95,
                      bottom - (bottom - (nose_y + 20)) * np.abs(t[::-1])**2.2], 1)
    poly = np.concatenate([upper, lower])
    mask = np.zeros((CANVAS, CANVAS), np.float32)
    fill(mask, poly, 1.0)
    colour = _MEDICAL[rng.choice(len(_MEDICAL), p=[0.5, 0.2, 0.15, 0.08, 0.07])]
    rgb = np.empty((CANVAS, CANVAS, 3), np.float32)
    rgb[:] = colour
    pleat = tuple(float(v) * 0.8 for v in colour)
    for k in range(3):
        y = nose_y + 4 + k * rng.uniform(5, 7)
        line(rgb,
             np.array([[cx - half * 0.95, y], [cx, y + 1.5], [cx + half * 0.95, y]]),
             pleat, 1)
    line(rgb, poly, tuple(float(v) * 0.85 for v in colour), 1, closed=True)
    # ear loops from the mask's corners to the ears
    for sign, (ex, ey) in zip((-1, 1), geo['ears']):
        loop = np.array([[cx + sign * half, side_top + 2], [ex, ey - 4],
                         [ex + sign * 1.5, ey + 6], [cx + sign * half * 0.95,
                                                     bottom - 12]])
        line(mask, loop, 1.0, 1)
    return rgb, mask


#: Occlusion types SynthFace draws, in the order used by the data set files.
OCCLUSION_TYPES = ('none', 'niqab', 'medical_mask', 'scarf', 'hand', 'sunglasses')

OCCLUDERS: Dict[str, Callable[[FaceIdentity, Geometry, np.random.Generator],
                              Layer]] = {
    'niqab': draw_niqab,
    'medical_mask': draw_medical_mask,
    'scarf': draw_scarf,
    'hand': draw_hand,
    'sunglasses': draw_sunglasses,
}
