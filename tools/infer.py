"""Use a trained OAML model: compare two faces, enrol identities, search a gallery.

    python tools/infer.py compare A.jpg B.jpg --config CFG --checkpoint CKPT \
        [--show pair.png] [--threshold T]
    python tools/infer.py enrol --gallery staff.pt --name alice a1.jpg a2.jpg \
        --config CFG --checkpoint CKPT
    python tools/infer.py search PROBE.jpg --gallery staff.pt --config CFG \
        --checkpoint CKPT [--top-k 5] [--no-rerank]

``--work-dir DIR`` replaces ``--config``/``--checkpoint`` (the dumped config and the
last checkpoint of a training run; a copied or moved run folder uses its own
checkpoint). Every checkpoint and gallery is verified (CRC-32) before use. ``search``
marks each hit SAME or different at the checkpoint's calibrated threshold of the
branch that ranked it, as ``compare`` decides. Images are aligned 112x112 crops, or
any photo: the face is detected, checked and aligned (``--faces``, ``--detect``,
``--align``, ``--boxes``; docs/inference.md, "From photos to embeddings"), or aligned
with ``--landmarks`` (10 numbers per image: x1 y1 ... x5 y5, in a file with one line per
image in argument order). Errors in the inputs exit with code 2 and one line, and so
does ``--branch`` naming a branch the model cannot give (no QAConv head, no
calibration for ``fused``, no fitted visibility fusion for ``fused_vis``): a
threshold belongs to one branch and is never applied to another. A backbone-only
checkpoint embeds (the cosine branch) with a log line naming the parts it lacks.
"""
import argparse
import json
import math
import os.path as osp
import sys

import oaml_mm  # noqa: F401
from oaml_mm.apis.photos import (format_reports, format_verdict, photo_crops,
                                 read_landmarks)
from oaml_mm.errors import OAMLError


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--config', help='model config file')
    p.add_argument('--checkpoint', help='checkpoint file')
    p.add_argument('--work-dir', help='training work dir (dumped config and '
                   'last checkpoint) instead of --config/--checkpoint')
    p.add_argument('--device', default='cpu')
    p.add_argument('--landmarks', help='text file: one line of 10 numbers '
                   '(x1 y1 ... x5 y5) per image, in argument order')
    p.add_argument('--json', action='store_true', help='print JSON')


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


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        # NaN compares False with every score: a verdict that means nothing.
        raise argparse.ArgumentTypeError(f'expected a finite number, got {text}')
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected an integer >= 1, got {text}')
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    c = sub.add_parser('compare', help='score two faces')
    c.add_argument('image_a')
    c.add_argument('image_b')
    c.add_argument('--threshold', type=_finite_float,
                   help='threshold of the deciding branch, in its unit '
                   '(adaface: cosine; qaconv: QAConv score; fused: z-score; '
                   'fused_vis: log-odds of the visibility-aware fusion); '
                   'overrides the calibrated one')
    c.add_argument('--branch',
                   choices=('adaface', 'qaconv', 'fused', 'fused_vis'),
                   help='branch that decides (default: the calibrated one, '
                   'fused_vis when the calibration fitted it); '
                   'a branch the model cannot give is an error')
    c.add_argument('--show', help='write an explanation picture (PNG/JPG)')
    c.add_argument('--lines', type=int, default=12,
                   help='correspondence lines in --show')
    _model_args(c)
    add_photo_args(c, faces=False)
    e = sub.add_parser('enrol', help='add images of one identity to a gallery')
    e.add_argument('images', nargs='+')
    e.add_argument('--name', required=True)
    e.add_argument('--gallery', required=True,
                   help='gallery file (created if missing; concurrent enrolments '
                   'take turns on the lock file GALLERY.lock)')
    _model_args(e)
    add_photo_args(e)
    s = sub.add_parser('search', help='nearest enrolled identities of a probe')
    s.add_argument('probe')
    s.add_argument('--gallery', required=True)
    s.add_argument('--top-k', type=_positive_int, default=5)
    s.add_argument('--rerank-k', type=_positive_int, default=20,
                   help='cosine candidates re-ranked with QAConv')
    s.add_argument('--no-rerank', action='store_true')
    s.add_argument('--show', help='write the probe photo, its faces and their '
                   'visibility (PNG/JPG)')
    _model_args(s)
    add_photo_args(s)
    return parser.parse_args(argv)


def _recognizer(args, **kwargs):
    from oaml_mm.apis import FaceRecognizer
    return FaceRecognizer.load(args.config, args.checkpoint, args.work_dir,
                               device=args.device, **kwargs)


def _crops(args, rec, images):
    """Aligned crops and reports of the images, as the photo options say."""
    return photo_crops(rec, images, read_landmarks(args.landmarks, len(images)),
                       getattr(args, 'faces', 'largest'), args.detect,
                       args.align, args.boxes)


def _join(*parts: str) -> str:
    return '\n'.join(p for p in parts if p)


def _print(args, obj, text: str) -> None:
    print(json.dumps(obj, indent=2) if args.json else text)


def _check_outputs(args) -> None:
    """Refuse unwritable output paths before any embedding is computed."""
    from oaml_mm.utils import check_output_file
    if getattr(args, 'show', None):
        check_output_file(args.show, '--show', image=True)
    if args.command == 'enrol':
        check_output_file(args.gallery, '--gallery')
        from oaml_mm.apis.face_gallery import check_identity_name
        check_identity_name(args.name)
    if args.command == 'search' and osp.isdir(args.gallery):
        from oaml_mm.errors import GalleryError
        raise GalleryError(f'--gallery {args.gallery!r} is a directory; expected '
                           'a gallery file written by enrol')


def cmd_compare(args) -> int:
    kwargs = {}
    if args.branch:
        kwargs['decision_branch'] = args.branch
    rec = _recognizer(args, **kwargs)
    images = [args.image_a, args.image_b]
    crops, reports = _crops(args, rec, images)
    out = rec.compare(crops[0], crops[1], threshold=args.threshold,
                      return_features=True)
    fa, fb = out.pop('features')
    out['faces'] = reports
    _print(args, out, _join(format_reports(reports), format_verdict(out)))
    if args.show:
        from oaml_mm.apis.photos import show_compare
        show_compare(args.show, images, crops, reports, out, fa, fb, args.lines)
        if not args.json:
            print(f'picture: {args.show}')
    return 0


def cmd_enrol(args) -> int:
    from oaml_mm.apis import FaceGallery
    rec = _recognizer(args)
    crops, reports = _crops(args, rec, args.images)
    feats = rec.extract(crops, return_feature_maps=True)
    # Load -> enrol -> save under the gallery's lock: a concurrent enrol waits
    # and then extends this one's file instead of overwriting it.
    with FaceGallery.updating(args.gallery, rec) as gallery:
        total = gallery.enrol_features(args.name, feats)
    _print(args, dict(name=args.name, images=total, identities=len(gallery),
                      faces=reports),
           _join(format_reports(reports),
                 f'{args.name}: {total} image(s); gallery {args.gallery} '
                 f'holds {len(gallery)} identities'))
    return 0


def cmd_search(args) -> int:
    from oaml_mm.apis import FaceGallery
    from oaml_mm.apis.photos import search_photo_faces
    rec = _recognizer(args)
    gallery = FaceGallery.load(args.gallery, rec)
    crops, reports = _crops(args, rec, [args.probe])
    result, text = search_photo_faces(gallery, crops, reports, args.top_k,
                                      not args.no_rerank, args.rerank_k,
                                      args.faces)
    _print(args, result, text)
    if args.show:
        from oaml_mm.apis.photos import show_photo_faces
        from oaml_mm.visualization import write_picture
        vis = rec.extract(crops)['visibility']
        write_picture(show_photo_faces([args.probe], reports, crops, vis)[0],
                      args.show)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        _check_outputs(args)
        return dict(compare=cmd_compare, enrol=cmd_enrol,
                    search=cmd_search)[args.command](args)
    except OAMLError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
