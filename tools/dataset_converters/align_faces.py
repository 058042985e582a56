"""Turn a folder of raw photos into an aligned face data set.

Argument parsing for :mod:`oaml_mm.apis.photo_folder` (the same work from Python:
:func:`oaml_mm.apis.align_folder`).

Every photo goes through :class:`~oaml_mm.apis.FaceFinder` (MTCNN detection, the
landmark plausibility check, alignment to the ArcFace 112x112 template; eye-only
alignment when the nose or mouth points are implausible) and is written as

* ``--format folder`` (default): ``OUT_DIR/<identity>/<name>.jpg``, a
  ``FaceImageFolder`` (flat input: ``OUT_DIR/<name>.jpg``);
* ``--format rec``: ``OUT_DIR/train.rec``, ``train.idx``, ``property`` in the
  insightface layout (identity sub-folders needed; labels = sorted folder order);
* with ``--masks MASK_DIR`` (an occluded set: ``MASK_DIR/<same relative
  path>.png``, 8- or 16-bit, 0..255, 0..65535 or 0/1 with 255 / 65535 / 1 =
  visible): ``OUT_DIR/images/...`` and ``OUT_DIR/masks/...`` (0..255) plus
  ``labels.txt``, an ``OcclusionMaskDataset``, the masks warped with the image.

Resumable: each output is written atomically and recorded in
``OUT_DIR/.align_journal.jsonl`` (a file, so a ``FaceImageFolder`` scan of OUT_DIR
does not take it for an identity) with the options it was made with. A rerun (after
a crash, or to fix failures) keeps the photos aligned before, retries every photo
that failed (fixed files, new ``--boxes`` / ``--landmarks`` lines), redoes an
aligned photo whose file or ``--landmarks`` / ``--boxes`` line changed or whose
output file is gone (the disk, not the journal, decides), and says how many it
retried. A rerun whose options would change the aligned faces
(``--align``, ``--size``, ``--format``, ``--faces``, ``--detect``,
``--min-score``, ``--quality``, ``--masks``, IN_DIR) is refused: use the recorded
options or a new OUT_DIR. OUT_DIR and IN_DIR may not contain each other. A bad
file (not an image, empty, huge, no face) never stops the run: it is listed in
``OUT_DIR/align_report.json`` (with every face's alignment path and detector
score) and ``OUT_DIR/align_failures.txt``.

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
