"""The canonical SynthFace canvas and its drawing primitives.

Faces (:mod:`.render`) and occluders (:mod:`.occluders`) are both drawn on a canvas
that holds the 112x112 aligned frame plus a margin of :data:`MARGIN` pixels on every
side, in aligned-frame coordinates, with OpenCV's anti-aliased sub-pixel drawing.
"""
from typing import Tuple

import cv2
import numpy as np

__all__ = ['MARGIN', 'CANVAS', 'SKIN', 'SHIFT', 'GRID', 'fill', 'line',
           'ellipse', 'canvas_points']

#: Margin of the canonical canvas around the aligned frame, in pixels.
MARGIN = 40
#: Side of the canonical canvas.
CANVAS = 112 + 2 * MARGIN

#: Skin tone palette (RGB), light to dark; blended by an identity's skin tone.
SKIN = np.array([[255, 226, 200], [241, 196, 162], [226, 172, 132],
                 [200, 138, 98], [163, 103, 68], [115, 74, 50], [78, 52, 38]],
                dtype=np.float32)
#: Sub-pixel bits of OpenCV's drawing calls.
SHIFT = 3
_SCALE = float(1 << SHIFT)


def canvas_points(pts: np.ndarray) -> np.ndarray:
    """Aligned-frame points -> int32 canvas points with sub-pixel bits."""
    return np.round((np.asarray(pts, np.float64).reshape(-1, 2) + MARGIN) *
                    _SCALE).astype(np.int32)


def fill(img: np.ndarray, pts: np.ndarray, colour) -> None:
    """Fill a polygon given in aligned-frame coordinates on a canonical canvas."""
    cv2.fillPoly(img, [canvas_points(pts)], colour, cv2.LINE_AA, SHIFT)


def line(img: np.ndarray, pts: np.ndarray, colour, thickness: int = 1,
         closed: bool = False) -> None:
    """Draw a polyline given in aligned-frame coordinates on a canonical canvas."""
    cv2.polylines(img, [canvas_points(pts)], closed, colour, thickness, cv2.LINE_AA,
                  SHIFT)


def ellipse(img: np.ndarray, centre, axes, angle: float, colour,
            thickness: int = -1) -> None:
    """Draw an ellipse (aligned-frame centre and half-axes) on a canonical canvas."""
    c = (int(round((centre[0] + MARGIN) * _SCALE)),
         int(round((centre[1] + MARGIN) * _SCALE)))
    ax = (max(1, int(round(axes[0] * _SCALE))), max(1, int(round(axes[1] * _SCALE))))
    cv2.ellipse(img, c, ax, float(angle), 0, 360, colour, thickness, cv2.LINE_AA,
                SHIFT)


def _grid() -> Tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float32)
    return xs - MARGIN, ys - MARGIN


#: ``(x, y)`` aligned-frame coordinates of every canvas pixel.
GRID = _grid()
