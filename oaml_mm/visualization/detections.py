"""Pictures of how a photo became a face crop: box, landmarks, crop, visibility.

The ``--show`` pictures of ``tools/infer.py`` on unaligned photos: the photo with
each face's box, five landmarks, the path that aligned it and the detector's score
(:func:`~oaml_mm.apis.face_finder.prepare_photos` reports), next to the aligned crop
tinted by the predicted visibility (:func:`visibility_overlay`).
"""
import os
import os.path as osp
from typing import List, Optional, Sequence

import cv2
import numpy as np

from oaml_mm.errors import ImageInputError
from .face_pair import _text, visibility_overlay

__all__ = ['draw_detections', 'stack_pictures', 'write_picture']

#: Landmark colours (RGB): eyes blue, nose green, mouth corners red.
_POINT_COLORS = ((40, 120, 255), (40, 120, 255), (40, 190, 60), (230, 40, 40),
                 (230, 40, 40))


def draw_detections(photo: np.ndarray,
                    reports: Sequence[dict],
                    crops: np.ndarray,
                    visibility: Optional[np.ndarray] = None,
                    height: int = 336,
                    title: str = '') -> np.ndarray:
    """One photo with its faces marked, then each aligned crop with visibility.

    Args:
        photo (np.ndarray): RGB uint8 [H, W, 3] (the input, before alignment).
        reports (Sequence[dict]): Its faces' reports (``box``, ``landmarks``,
            ``path``, ``score``) as :func:`prepare_photos` returns them.
        crops (np.ndarray): RGB uint8 [N, S, S, 3], one per report.
        visibility (np.ndarray, optional): [N, h, w] (or [N, 1, h, w]) predicted
            visibility in [0, 1]; the crops are shown plain without it.
        height (int): Height of the photo and crops in the picture. Defaults to 336.
        title (str): Line above the picture (e.g. the file name).

    Returns:
        np.ndarray: RGB uint8 picture.
    """
    h, w = photo.shape[:2]
    s = height / h
    pic = cv2.resize(photo, (max(1, round(w * s)), height),
                     interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    thick = max(1, round(height / 200))
    for k, rep in enumerate(reports):
        if rep.get('box') is not None:
            x1, y1, x2, y2 = (int(round(v * s)) for v in rep['box'])
            cv2.rectangle(pic, (x1, y1), (x2, y2), (255, 210, 0), thick,
                          cv2.LINE_AA)
            score = '' if rep.get('score') is None else f' {rep["score"]:.2f}'
            _text(pic, f'{k}{score}', (x1 + 2, max(12, y1 - 4)), 0.45,
                  (255, 210, 0), 1)
        if rep.get('landmarks') is not None:
            for (x, y), color in zip(rep['landmarks'], _POINT_COLORS):
                cv2.circle(pic, (int(round(x * s)), int(round(y * s))),
                           thick + 2, color, -1, cv2.LINE_AA)
    tiles = []
    for k, crop in enumerate(crops):
        big = cv2.resize(crop, (height, height), interpolation=cv2.INTER_CUBIC)
        if visibility is not None:
            v = np.asarray(visibility[k], np.float32)
            big = visibility_overlay(big, v.reshape(v.shape[-2:]))
        tiles.append(big)
    gap = 12
    head = 30 + 22 * len(reports)
    width = pic.shape[1] + sum(t.shape[1] + gap for t in tiles) + 2 * gap
    canvas = np.full((head + height + gap, width, 3), 250, np.uint8)
    x = gap
    canvas[head:head + height, x:x + pic.shape[1]] = pic
    x += pic.shape[1] + gap
    for t in tiles:
        canvas[head:head + height, x:x + t.shape[1]] = t
        x += t.shape[1] + gap
    _text(canvas, title[:80], (gap, 20), 0.55, (20, 20, 20), 1)
    for k, rep in enumerate(reports):
        score = 'not detected' if rep.get('score') is None else \
            f'detector score {rep["score"]:.3f}'
        note = f' ({rep["note"]})' if rep.get('note') else ''
        _text(canvas, f'face {k}: {rep["path"]}, {score}{note}'[:110],
              (gap, 42 + 22 * k), 0.45)
    return canvas


def stack_pictures(pictures: List[np.ndarray], gap: int = 8) -> np.ndarray:
    """Stack RGB pictures top to bottom on a light background, left-aligned."""
    width = max(p.shape[1] for p in pictures)
    height = sum(p.shape[0] for p in pictures) + gap * (len(pictures) - 1)
    canvas = np.full((height, width, 3), 250, np.uint8)
    y = 0
    for p in pictures:
        canvas[y:y + p.shape[0], :p.shape[1]] = p
        y += p.shape[0] + gap
    return canvas


def write_picture(picture: np.ndarray, out_file: str) -> None:
    """Write an RGB picture as PNG or JPEG (by extension), creating folders.

    Raises:
        ImageInputError: The extension is not an image format OpenCV encodes.
    """
    ext = osp.splitext(out_file)[1].lower() or '.png'
    ok, buf = cv2.imencode(ext, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageInputError(f'{out_file}: cannot encode a picture as {ext}')
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    with open(out_file, 'wb') as f:
        f.write(buf.tobytes())
