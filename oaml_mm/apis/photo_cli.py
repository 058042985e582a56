"""Command-line options and output of ``tools/infer.py`` for unaligned photos.

Kept apart from ``tools/infer.py`` so the photo handling (detector options, the
per-image report, the ``--show`` panels) lives in one place: see
:mod:`oaml_mm.apis.face_finder` and ``docs/inference.md``, "From photos to
embeddings".
"""
import argparse
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from oaml_mm.errors import ImageInputError
from .face_finder import FaceFinder, prepare_photos, read_photo

__all__ = ['add_photo_args', 'finder_from_args', 'photo_crops',
           'format_reports', 'show_photo_faces']

_FINDERS = {}


def add_photo_args(p: argparse.ArgumentParser, faces: bool = True) -> None:
    """Add ``--detect``, ``--align``, ``--boxes`` (and ``--faces``) to a parser."""
    g = p.add_argument_group('unaligned photos')
    if faces:
        g.add_argument('--faces', choices=('largest', 'all'), default='largest',
                       help='use the largest face of each photo, or all faces')
    g.add_argument('--detect', choices=('auto', 'always', 'never'),
                   default='auto', help='auto: 112x112 images are aligned crops, '
                   'others are detected; always: detect in every image')
    g.add_argument('--align', choices=('auto', 'five', 'eyes'), default='auto',
                   help='auto: five landmarks when plausible, else the eyes '
                   'alone; eyes: always the eyes (niqab photos)')
    g.add_argument('--boxes', help='text file: one line "x1 y1 x2 y2" per image '
                   '(in argument order; "-" for none), used when detection fails')


def finder_from_args(args: argparse.Namespace, size: int) -> FaceFinder:
    """The FaceFinder the options ask for (one detector per process)."""
    key = (getattr(args, 'faces', 'largest'), args.detect, args.align, size)
    if key not in _FINDERS:
        shared = next(iter(_FINDERS.values()), None)
        _FINDERS[key] = FaceFinder(shared._detector if shared else None,
                                   select=key[0], detect=key[1], align=key[2],
                                   size=size)
    return _FINDERS[key]


def _boxes(path: Optional[str], count: int):
    if not path:
        return None
    try:
        with open(path) as f:
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


def photo_crops(args: argparse.Namespace, recognizer, images: Sequence[str],
                landmarks=None) -> Tuple[torch.Tensor, List[dict]]:
    """Aligned crops of the images named on the command line, with reports."""
    finder = finder_from_args(args, recognizer.input_size)
    return prepare_photos(list(images), None, landmarks, recognizer.input_size,
                          finder, _boxes(args.boxes, len(images)))


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
