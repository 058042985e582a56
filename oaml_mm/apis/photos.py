"""Photos given by path: side files, aligned crops, report lines and pictures.

What ``tools/infer.py`` does with the photos named on its command line, as
functions a script can call too: read the ``--boxes`` / ``--landmarks`` side files,
detect and align the faces (:class:`~oaml_mm.apis.face_finder.FaceFinder`, one
detector per process), format one report line per face, a comparison verdict and a
gallery hit list, and draw the ``--show`` pictures. See ``docs/inference.md``,
"From photos to embeddings".
"""
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from oaml_mm.errors import ImageInputError
from .face_finder import FaceFinder, prepare_photos, read_photo

__all__ = ['finder_for', 'read_boxes', 'read_landmarks', 'photo_crops',
           'format_reports', 'format_verdict', 'format_hits',
           'search_photo_faces', 'show_photo_faces', 'show_compare']

_FINDERS = {}


def finder_for(size: int,
               faces: str = 'largest',
               detect: str = 'auto',
               align: str = 'auto') -> FaceFinder:
    """The FaceFinder of these options, sharing one detector per process.

    Args:
        size (int): Crop side in pixels (the model's input size).
        faces (str): ``'largest'`` or ``'all'`` faces per photo.
        detect (str): ``'auto'`` (112x112 images are aligned crops), ``'always'``
            or ``'never'``.
        align (str): ``'auto'``, ``'five'`` or ``'eyes'``.

    Returns:
        FaceFinder: Cached per option set.
    """
    key = (faces, detect, align, size)
    if key not in _FINDERS:
        shared = next(iter(_FINDERS.values()), None)
        _FINDERS[key] = FaceFinder(shared._detector if shared else None,
                                   select=faces, detect=detect, align=align,
                                   size=size)
    return _FINDERS[key]


def read_boxes(path: Optional[str], count: int) -> Optional[List[Optional[list]]]:
    """Face boxes of ``count`` images from a text file.

    Args:
        path (str, optional): One line ``"x1 y1 x2 y2"`` (pixels) or ``"-"`` (no
            box) per image, in argument order; None gives None.
        count (int): Number of images.

    Returns:
        list or None: ``[x1, y1, x2, y2]`` floats or None per image.

    Raises:
        ImageInputError: Unreadable file, wrong line count or a malformed line
            (file and line named).
    """
    if not path:
        return None
    try:
        with open(path, encoding='utf-8-sig') as f:  # a BOM is not a number
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError as e:
        raise ImageInputError(f'{path}: cannot read boxes ({e})') from None
    if len(lines) != count:
        raise ImageInputError(f'{path}: expected {count} line(s) of boxes, got '
                              f'{len(lines)}')
    out = []
    for i, ln in enumerate(lines, 1):
        if ln == '-':
            out.append(None)
            continue
        try:
            box = [float(v) for v in ln.split()]
        except ValueError:
            box = []
        if len(box) != 4:
            raise ImageInputError(f'{path}, line {i}: expected 4 numbers '
                                  f'"x1 y1 x2 y2" or "-", got {ln!r}')
        out.append(box)
    return out


def read_landmarks(path: Optional[str],
                   count: int) -> Optional[List[np.ndarray]]:
    """Five landmarks of ``count`` images from a text file.

    Args:
        path (str, optional): One line of 10 numbers ``x1 y1 ... x5 y5`` (pixels;
            eyes, nose, mouth corners) per image, in argument order; None gives
            None.
        count (int): Number of images.

    Returns:
        list or None: One float64 [5, 2] array per image.

    Raises:
        ImageInputError: Unreadable file or not ``count`` lines of 10 numbers.
    """
    if not path:
        return None
    try:
        # utf-8-sig: a byte-order mark (Windows editors) is not a number.
        rows = np.loadtxt(path, dtype=np.float64, ndmin=2,
                          encoding='utf-8-sig')
    except (OSError, ValueError) as e:
        raise ImageInputError(f'{path}: cannot read landmarks ({e})') from None
    if rows.shape != (count, 10):
        raise ImageInputError(
            f'{path}: expected {count} line(s) of 10 numbers, got '
            f'shape {rows.shape}')
    return [r.reshape(5, 2) for r in rows]


def photo_crops(recognizer,
                images: Sequence[str],
                landmarks: Optional[Sequence] = None,
                faces: str = 'largest',
                detect: str = 'auto',
                align: str = 'auto',
                boxes: Union[None, str, Sequence] = None
                ) -> Tuple[torch.Tensor, List[dict]]:
    """Aligned crops of photos for ``recognizer``, with one report per face.

    Args:
        recognizer: A :class:`~oaml_mm.apis.FaceRecognizer` (its ``input_size``).
        images (Sequence[str]): Photo paths.
        landmarks (Sequence, optional): One [5, 2] per image (None to detect).
        faces, detect, align (str): As :func:`finder_for`.
        boxes (str or Sequence, optional): A box file (:func:`read_boxes`) or one
            box (or None) per image, used when detection fails.

    Returns:
        tuple: uint8 [N, 3, S, S] RGB crops and their reports
        (:func:`~oaml_mm.apis.prepare_photos`).

    Raises:
        ImageInputError: A bad photo or side file; NoFaceError: no face found.
    """
    if isinstance(boxes, (str, os.PathLike)):
        boxes = read_boxes(os.fspath(boxes), len(images))
    finder = finder_for(recognizer.input_size, faces, detect, align)
    return prepare_photos(list(images), None, landmarks, recognizer.input_size,
                          finder, boxes)


def format_reports(reports: Sequence[dict]) -> str:
    """One line per face: image, path taken, detector score, why eyes only.

    Empty when every input was an aligned crop (nothing was detected).
    """
    lines = []
    for r in reports:
        if r['path'] == 'aligned-input':
            continue
        score = '' if r['score'] is None else f', detector score {r["score"]:.3f}'
        note = f' ({r["note"]})' if r.get('note') else ''
        lines.append(f'face: {osp.basename(r["image"])}: {r["path"]}{score}{note}')
    return '\n'.join(lines)


def format_verdict(result: dict) -> str:
    """Two lines for :meth:`FaceRecognizer.compare`'s result: scores, verdict.

    Args:
        result (dict): ``compare``'s output (``scores``, ``same``, ``branch``,
            ``unit``, ``threshold``, ``threshold_source``).

    Returns:
        str: The scores of every branch, then SAME / DIFFERENT with the deciding
        branch and threshold, or why there is no decision.
    """
    scores = '  '.join(f'{k} {v:.4f}' for k, v in result['scores'].items())
    if result['same'] is None:
        verdict = (f'decision unknown: no threshold for the {result["branch"]} '
                   f'branch ({result["unit"]}); ' + result.get(
                       'no_threshold_reason',
                       'the checkpoint is not calibrated, pass --threshold'))
    else:
        verdict = (f'{"SAME" if result["same"] else "DIFFERENT"} person '
                   f'({result["branch"]} '
                   f'{result["scores"][result["branch"]]:.4f} '
                   f'{">=" if result["same"] else "<"} threshold '
                   f'{result["threshold"]:.4f}, {result["unit"]}; threshold '
                   f'{result["threshold_source"]})')
    return f'{scores}\n{verdict}'


def format_hits(hits: Sequence[dict]) -> List[str]:
    """Lines for the hits of :meth:`FaceGallery.search`: rank, name, scores and the
    open-set verdict (same / different and the threshold it used), then where the
    threshold came from, or why there is no verdict."""
    lines = []
    for i, h in enumerate(hits, 1):
        extra = '  '.join(f'{k} {h[k]:.4f}'
                          for k in ('adaface', 'qaconv', 'fused') if k in h)
        same = h.get('same')
        verdict = 'no threshold' if same is None else (
            f'{"SAME" if same else "different"} '
            f'({h["branch"]} {">=" if same else "<"} {h["threshold"]:.4f})')
        lines.append(f'{i:2d}. {h["name"]:<24s} score {h["score"]:.4f}  '
                     f'{verdict}  ({extra})')
    if hits and hits[0].get('same') is not None:
        lines.append(f'    threshold {hits[0]["threshold_source"]} '
                     f'({hits[0]["unit"]})')
    elif hits:
        why = hits[0].get('no_threshold_reason',
                          'the checkpoint is not calibrated')
        lines.append(f'    decision unknown: no threshold for the '
                     f'{hits[0].get("branch")} branch ({why}): the nearest '
                     'names are not matches')
    return lines


def search_photo_faces(gallery,
                       crops: torch.Tensor,
                       reports: Sequence[dict],
                       top_k: int = 5,
                       rerank: bool = True,
                       rerank_k: int = 20,
                       faces: str = 'largest') -> Tuple[list, str]:
    """Search the gallery for every face of a probe photo; what ``search`` prints.

    Args:
        gallery: A :class:`~oaml_mm.apis.FaceGallery`.
        crops (torch.Tensor): uint8 [N, 3, S, S] aligned crops, one per face
            (:func:`photo_crops`).
        reports (Sequence[dict]): Their reports, in the same order.
        top_k, rerank, rerank_k: As :meth:`FaceGallery.search` (each face is
            searched on its own).
        faces (str): ``'largest'`` or ``'all'``, as the crops were found.

    Returns:
        tuple: ``(result, text)``. ``result`` is the one face's hit list when
        ``faces='largest'`` found one face, else one ``dict(face=report,
        hits=[...])`` per face; ``text`` is the face report lines, then for
        each face (headed ``face <i>:`` when there are several) its hit lines
        (:func:`format_reports`, :func:`format_hits`).

    Raises:
        GalleryError: The gallery is empty. ImageInputError: ``top_k`` or
            ``rerank_k`` is not a positive integer.
    """
    results, lines = [], [format_reports(reports)]
    for face, report in enumerate(reports):
        hits = gallery.search(crops[face], top_k, rerank, rerank_k)
        results.append(dict(face=report, hits=hits))
        if len(reports) > 1:
            lines.append(f'face {face}:')
        lines += format_hits(hits)
    result = results[0]['hits'] if len(results) == 1 and \
        faces == 'largest' else results
    return result, '\n'.join(line for line in lines if line)


def show_photo_faces(images: Sequence[str], reports: Sequence[dict],
                     crops: torch.Tensor,
                     visibility: Optional[torch.Tensor]) -> List[np.ndarray]:
    """One :func:`draw_detections` panel per input photo."""
    from oaml_mm.visualization import draw_detections
    panels = []
    arr = crops.permute(0, 2, 3, 1).numpy()
    for i, path in enumerate(images):
        rows = [k for k, r in enumerate(reports) if r['index'] == i]
        vis = None if visibility is None else visibility[rows].numpy()
        panels.append(draw_detections(
            read_photo(path), [reports[k] for k in rows], arr[rows], vis,
            title=os.fspath(path)))
    return panels


def show_compare(out_file: str, images: Sequence[str], crops: torch.Tensor,
                 reports: Sequence[dict], result: dict, feats_a: dict,
                 feats_b: dict, lines: int = 12) -> np.ndarray:
    """``compare --show``: the comparison picture, under the photos' panels.

    The photo panels (box, landmarks, path, score, aligned crop with visibility)
    are added when at least one input was not an aligned crop.
    """
    from oaml_mm.visualization import (render_comparison, stack_pictures,
                                       write_picture)
    arr = crops.permute(0, 2, 3, 1).numpy()
    labels = [osp.basename(str(x)) for x in images]
    picture = render_comparison(arr[0], arr[1], result, feats_a, feats_b, lines,
                                labels)
    if any(r['path'] != 'aligned-input' for r in reports):
        vis = torch.cat([feats_a['visibility'], feats_b['visibility']])
        picture = stack_pictures(
            show_photo_faces(images, reports, crops, vis) + [picture])
    write_picture(picture, out_file)
    return picture
