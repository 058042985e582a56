"""Pictures that explain a face comparison: visibility overlays and QAConv matches.

QAConv's correlation of every probe cell with every gallery cell is itself an
explanation (Liao & Shao, ECCV 2020, show the best-matching locations as lines between
the two images); OAML's predicted visibility map (on the model's grid: 7x7 for
112x112 faces) says which cells the model trusts.
These helpers draw both with OpenCV: each face with its visibility tinted over it (red
= predicted occluded, green = visible), the strongest mutual best-matching cell pairs
as lines between the faces, and a header with the scores and the decision.
"""
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

__all__ = ['visibility_overlay', 'strongest_correspondences', 'draw_face_pair',
           'draw_visibility_grid']

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _vis_colors(vis: np.ndarray) -> np.ndarray:
    """RGB colour per visibility value: red (0, occluded) to green (1, visible)."""
    v = np.clip(vis, 0, 1)[..., None]
    red = np.array([230, 40, 40], np.float32)
    green = np.array([40, 200, 60], np.float32)
    return (1 - v) * red + v * green


def visibility_overlay(img: np.ndarray, vis: np.ndarray, alpha: float = 0.4,
                       grid: bool = True) -> np.ndarray:
    """Tint an RGB face by its visibility map.

    Args:
        img (np.ndarray): RGB uint8 [H, W, 3].
        vis (np.ndarray): [h, w] (or [1, h, w]) visibility in [0, 1].
        alpha (float): Opacity of the tint. Defaults to 0.4.
        grid (bool): Draw the cell borders. Defaults to True.

    Returns:
        np.ndarray: RGB uint8 [H, W, 3].
    """
    vis = np.asarray(vis, np.float32).reshape(np.asarray(vis).shape[-2:])
    h, w = img.shape[:2]
    cells = cv2.resize(vis, (w, h), interpolation=cv2.INTER_NEAREST)
    tint = _vis_colors(cells)
    out = (1 - alpha) * img.astype(np.float32) + alpha * tint
    out = np.clip(out, 0, 255).astype(np.uint8)
    if grid:
        gh, gw = vis.shape
        for i in range(1, gh):
            y = int(round(i * h / gh))
            cv2.line(out, (0, y), (w - 1, y), (255, 255, 255), 1, cv2.LINE_AA)
        for j in range(1, gw):
            x = int(round(j * w / gw))
            cv2.line(out, (x, 0), (x, h - 1), (255, 255, 255), 1, cv2.LINE_AA)
    return out


def strongest_correspondences(map_a: torch.Tensor, map_b: torch.Tensor,
                              vis_a: Optional[torch.Tensor] = None,
                              vis_b: Optional[torch.Tensor] = None,
                              k: int = 12) -> List[Tuple[int, int, float]]:
    """The ``k`` strongest mutual best matches between the cells of two maps.

    The correlation is QAConv's (inner products of channel-normalised cell
    features), weighted by both cells' visibility as OAML's seed rule does. A pair
    ``(r, t)`` is kept when ``t`` is ``r``'s best cell and ``r`` is ``t``'s.

    Args:
        map_a (Tensor): [C, h, w] feature map (normalised over channels here).
        map_b (Tensor): [C, h, w].
        vis_a (Tensor, optional): [1, h, w] or [h, w] visibility of ``map_a``.
        vis_b (Tensor, optional): Visibility of ``map_b``.
        k (int): Most pairs to return.

    Returns:
        list[tuple]: ``(cell_a, cell_b, weighted correlation)`` (cells in row-major
        order), strongest first.

    Examples:
        >>> m = torch.eye(4).reshape(4, 2, 2)
        >>> strongest_correspondences(m, m, k=2)
        [(0, 0, 1.0), (1, 1, 1.0)]
    """
    a = torch.nn.functional.normalize(map_a.float().reshape(map_a.shape[0], -1),
                                      dim=0)
    b = torch.nn.functional.normalize(map_b.float().reshape(map_b.shape[0], -1),
                                      dim=0)
    corr = a.T @ b
    if vis_a is not None:
        corr = corr * vis_a.float().reshape(-1, 1)
    if vis_b is not None:
        corr = corr * vis_b.float().reshape(1, -1)
    best_t = corr.argmax(1)
    best_r = corr.argmax(0)
    pairs = [(r, int(best_t[r]), float(corr[r, best_t[r]]))
             for r in range(corr.shape[0]) if int(best_r[best_t[r]]) == r]
    pairs.sort(key=lambda p: (-p[2], p[0]))
    return pairs[:k]


def _arc(pa: Tuple[int, int], pb: Tuple[int, int], bow: float,
         steps: int = 24) -> np.ndarray:
    """Points of a quadratic curve from ``pa`` to ``pb`` bowed up by ``bow`` px."""
    a = np.asarray(pa, np.float32)
    b = np.asarray(pb, np.float32)
    ctrl = (a + b) / 2 - np.array([0, 2 * bow], np.float32)
    t = np.linspace(0, 1, steps, dtype=np.float32)[:, None]
    pts = (1 - t)**2 * a + 2 * (1 - t) * t * ctrl + t**2 * b
    return np.round(pts).astype(np.int32).reshape(-1, 1, 2)


def _text(img: np.ndarray, text: str, org: Tuple[int, int], scale: float = 0.5,
          color=(20, 20, 20), thick: int = 1) -> None:
    cv2.putText(img, text, org, _FONT, scale, color, thick, cv2.LINE_AA)


def draw_face_pair(img_a: np.ndarray,
                   img_b: np.ndarray,
                   vis_a: np.ndarray,
                   vis_b: np.ndarray,
                   matches: Sequence[Tuple[int, int, float]] = (),
                   header: Sequence[str] = (),
                   labels: Sequence[str] = ('A', 'B'),
                   scale: int = 3,
                   decision: Optional[bool] = None) -> np.ndarray:
    """Both faces with visibility overlays, correspondence lines and a header.

    Args:
        img_a, img_b (np.ndarray): Aligned RGB uint8 crops.
        vis_a, vis_b (np.ndarray): Their [h, w] visibility maps.
        matches (Sequence[tuple]): ``(cell_a, cell_b, strength)`` as
            :func:`strongest_correspondences` returns.
        header (Sequence[str]): Text lines above the faces (scores, decision).
        labels (Sequence[str]): Captions under the faces.
        scale (int): Upscaling of the crops. Defaults to 3 (336 px for 112).
        decision (bool, optional): Colours the first header line green (same) or
            red (different).

    Returns:
        np.ndarray: RGB uint8 picture.
    """
    size = img_a.shape[0] * scale
    gap, margin = 90, 20
    head_h = 28 + 24 * max(1, len(header))
    foot_h = 96
    width = 2 * size + gap + 2 * margin
    height = head_h + size + foot_h
    canvas = np.full((height, width, 3), 250, np.uint8)
    faces = []
    for img, vis in ((img_a, vis_a), (img_b, vis_b)):
        big = cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)
        faces.append(visibility_overlay(big, vis))
    xa, xb, y0 = margin, margin + size + gap, head_h
    canvas[y0:y0 + size, xa:xa + size] = faces[0]
    canvas[y0:y0 + size, xb:xb + size] = faces[1]
    for i, line in enumerate(header):
        color = (20, 20, 20)
        if i == 0 and decision is not None:
            color = (20, 140, 40) if decision else (200, 30, 30)
        _text(canvas, line, (margin, 24 + 24 * i), 0.6, color,
              2 if i == 0 else 1)
    grid = np.asarray(vis_a).reshape(np.asarray(vis_a).shape[-2:]).shape
    cell = size / grid[1]
    if matches:
        top = max(m[2] for m in matches)
        low = min(m[2] for m in matches)
        for rank, (r, t, s) in enumerate(sorted(matches, key=lambda m: m[2])):
            # Strength picks colour (yellow strong, blue weak) and width.
            f = 1.0 if top == low else (s - low) / (top - low)
            color = (int(60 + 195 * f), int(90 + 140 * f), int(220 - 200 * f))
            pa = (int(xa + (r % grid[1] + 0.5) * cell),
                  int(y0 + (r // grid[1] + 0.5) * cell))
            pb = (int(xb + (t % grid[1] + 0.5) * cell),
                  int(y0 + (t // grid[1] + 0.5) * cell))
            # A slight arc, bowed by rank, keeps matches on one row apart.
            pts = _arc(pa, pb, 10 + 6 * (rank % 6))
            cv2.polylines(canvas, [pts], False, (0, 0, 0), 4, cv2.LINE_AA)
            cv2.polylines(canvas, [pts], False, color, 2, cv2.LINE_AA)
            cv2.circle(canvas, pa, 4, color, -1, cv2.LINE_AA)
            cv2.circle(canvas, pb, 4, color, -1, cv2.LINE_AA)
    fy = y0 + size + 22
    for x, label in ((xa, labels[0]), (xb, labels[1])):
        _text(canvas, label[:40], (x, fy), 0.55)
    # Legend: visibility colour bar and the meaning of the lines.
    ly = fy + 18
    bar_w = 160
    ramp = np.linspace(0, 1, bar_w, dtype=np.float32)
    bar = np.repeat(_vis_colors(ramp)[None], 14, 0).astype(np.uint8)
    canvas[ly:ly + 14, margin:margin + bar_w] = bar
    _text(canvas, 'occluded', (margin, ly + 30), 0.45)
    _text(canvas, 'visible', (margin + bar_w - 52, ly + 30), 0.45)
    _text(canvas, 'predicted visibility', (margin + bar_w + 10, ly + 12), 0.45)
    lx = margin + bar_w + 10
    cv2.line(canvas, (lx, ly + 28), (lx + 40, ly + 28), (255, 230, 20), 2,
             cv2.LINE_AA)
    _text(canvas, f'{len(matches)} strongest mutual QAConv cell matches '
          '(yellow = strongest)', (lx + 48, ly + 32), 0.45)
    return canvas


def draw_visibility_grid(images: np.ndarray, vis: np.ndarray, ncol: int = 8,
                         scale: int = 1) -> np.ndarray:
    """Tile faces with their visibility overlays (for TensorBoard).

    Args:
        images (np.ndarray): RGB uint8 [B, H, W, 3].
        vis (np.ndarray): [B, h, w] or [B, 1, h, w] visibility.
        ncol (int): Faces per row.
        scale (int): Upscaling of each face.

    Returns:
        np.ndarray: RGB uint8 [rows*H', ncol*W', 3] (blank cells are grey).
    """
    vis = np.asarray(vis, np.float32).reshape(len(images), *np.asarray(
        vis).shape[-2:])
    h, w = images.shape[1] * scale, images.shape[2] * scale
    ncol = max(1, min(ncol, len(images)))
    rows = (len(images) + ncol - 1) // ncol
    out = np.full((rows * h, ncol * w, 3), 128, np.uint8)
    for i, (img, v) in enumerate(zip(images, vis)):
        if scale != 1:
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST)
        r, c = divmod(i, ncol)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = visibility_overlay(img, v)
    return out
