"""Turn a folder of raw photos into an aligned face data set.

Argument parsing for :mod:`oaml_mm.apis.photo_folder` (the same work from Python:
:func:`oaml_mm.apis.align_folder`).

What it writes (``--format folder`` / ``rec``, ``--masks``), how a rerun resumes
and which reruns are refused: :mod:`oaml_mm.apis.photo_folder` and
docs/datasets.md.

Examples:
    python tools/dataset_converters/align_faces.py raw_photos/ data/aligned \\
        --workers 2
    python tools/dataset_converters/align_faces.py raw_photos/ data/aligned_rec \\
        --format rec
    python tools/dataset_converters/align_faces.py niqab/images data/niqab_aligned \\
        --masks niqab/masks --align eyes --boxes niqab/boxes.txt
"""
import argparse
import sys

from oaml_mm.apis.photo_folder import format_summary, run
from oaml_mm.errors import OAMLError


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('in_dir', help='photos: one sub-folder per identity, or flat')
    p.add_argument('out_dir', help='output folder (created)')
    p.add_argument('--format', choices=('folder', 'rec'), default='folder')
    p.add_argument('--masks', help='folder of visibility masks mirroring IN_DIR '
                   '(<relative path without extension>.png; 0..255, 16-bit '
                   '0..65535 or 0/1, 255 / 65535 / 1 = visible)')
    p.add_argument('--faces', choices=('largest', 'all'), default='largest')
    p.add_argument('--align', choices=('auto', 'five', 'eyes'), default='auto')
    p.add_argument('--detect', choices=('auto', 'always'), default='always',
                   help='always (default): detect in every photo, 112x112 '
                   'ones too; auto: take 112x112 photos as aligned crops')
    p.add_argument('--landmarks', help='text file: "<relative path> x1 y1 ... x5 '
                   'y5" per line, used instead of detection for those files')
    p.add_argument('--boxes', help='text file: "<relative path> x1 y1 x2 y2" per '
                   'line, used when detection fails (manual fallback)')
    p.add_argument('--min-score', type=float, default=0.0,
                   help='drop detections under this detector score')
    p.add_argument('--size', type=int, default=112)
    p.add_argument('--quality', type=int, default=95, help='JPEG quality')
    p.add_argument('--workers', type=int, default=2,
                   help='processes (0: in this process)')
    p.add_argument('--no-progress', action='store_true')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        rep = run(args)
    except OAMLError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(format_summary(rep))
    return 0


if __name__ == '__main__':
    sys.exit(main())
