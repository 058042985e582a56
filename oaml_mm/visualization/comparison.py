"""The ``tools/infer.py compare --show`` picture of one comparison."""
import os
import os.path as osp
from typing import Dict, Optional

import cv2
import numpy as np
import torch

from oaml_mm.errors import ImageInputError
from .face_pair import draw_face_pair, strongest_correspondences

__all__ = ['render_comparison', 'show_comparison']


def render_comparison(crop_a: np.ndarray, crop_b: np.ndarray, result: dict,
                      feats_a: Dict[str, torch.Tensor],
                      feats_b: Dict[str, torch.Tensor], lines: int = 12,
                      labels=('A', 'B')) -> np.ndarray:
    """Draw a :meth:`FaceRecognizer.compare` result.

    Args:
        crop_a, crop_b (np.ndarray): Aligned RGB uint8 crops [S, S, 3].
        result (dict): ``compare``'s output (``scores``, ``branch``,
            ``threshold``, ``same``).
        feats_a, feats_b (dict): The two images' features (batch of one), with
            ``visibility`` and, for the lines, ``feature_map``.
        lines (int): Correspondence lines to draw.
        labels (tuple): Captions of the faces.

    Returns:
        np.ndarray: RGB uint8 picture.
    """
    vis_a = feats_a['visibility'][0, 0].float().numpy()
    vis_b = feats_b['visibility'][0, 0].float().numpy()
    matches = []
    if 'feature_map' in feats_a and lines > 0:
        matches = strongest_correspondences(
            feats_a['feature_map'][0], feats_b['feature_map'][0],
            feats_a['visibility'][0], feats_b['visibility'][0], lines)
    scores = result['scores']
    if result.get('same') is None:
        head = 'no calibrated threshold: decision unknown'
    else:
        head = (f'{"SAME PERSON" if result["same"] else "DIFFERENT PEOPLE"}   '
                f'({result["branch"]} {scores[result["branch"]]:.3f} '
                f'{">=" if result["same"] else "<"} threshold '
                f'{result["threshold"]:.3f})')
    header = [head, '   '.join(f'{k}: {v:.3f}' for k, v in scores.items()),
              f'mean visibility  A {vis_a.mean():.2f}   B {vis_b.mean():.2f}']
    return draw_face_pair(crop_a, crop_b, vis_a, vis_b, matches, header,
                          labels=labels, decision=result.get('same'))


def show_comparison(recognizer, img_a, img_b, result: dict,
                    feats_a: Dict[str, torch.Tensor],
                    feats_b: Dict[str, torch.Tensor], out_file: str,
                    lines: int = 12, landmarks=None,
                    channel_order: Optional[str] = None) -> np.ndarray:
    """Render a comparison and write it to ``out_file`` (PNG or JPEG).

    Args:
        recognizer (FaceRecognizer): Aligns the two inputs as ``compare`` did.
        img_a, img_b: The inputs given to ``compare``.
        result, feats_a, feats_b: ``compare(..., return_features=True)`` output.
        out_file (str): Picture to write (folders are created).
        lines (int): Correspondence lines.
        landmarks (list, optional): The two landmark sets, if any.
        channel_order (str, optional): Of array inputs.

    Returns:
        np.ndarray: The RGB picture.
    """
    crops = recognizer.prepare([img_a, img_b], channel_order, landmarks)
    crops = crops.permute(0, 2, 3, 1).numpy()
    labels = [osp.basename(str(x)) if isinstance(x, (str, os.PathLike)) else n
              for x, n in ((img_a, 'A'), (img_b, 'B'))]
    picture = render_comparison(crops[0], crops[1], result, feats_a, feats_b,
                                lines, labels)
    ext = osp.splitext(out_file)[1].lower() or '.png'
    ok, buf = cv2.imencode(ext, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageInputError(f'{out_file}: cannot encode a picture as {ext}')
    folder = osp.dirname(osp.abspath(out_file))
    os.makedirs(folder, exist_ok=True)
    with open(out_file, 'wb') as f:
        f.write(buf.tobytes())
    return picture
