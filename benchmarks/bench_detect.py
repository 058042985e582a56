"""Photo benchmark: detect + align images/s against the bare detector call.

Times, in alternation in one process (in both orders), on a 640x480 photo
(``skimage.data.astronaut()`` on a 640x480 canvas) and on a 112x112 loose crop of the
same face:

* **baseline**: the bare MTCNN call of ``facenet-pytorch`` (``MTCNN.detect`` with
  landmarks), what any user of the library pays;
* **detect + align**: :meth:`oaml_mm.apis.FaceFinder.find` (our
  :class:`~oaml_mm.models.detectors.FaceDetector` around the same call, the landmark
  plausibility check and the ``AlignFace5Points`` warp), what
  ``FaceRecognizer``/``tools/infer.py`` and ``align_faces.py`` pay per photo.

The ratio (detect + align / bare, images/s) shows the cost of everything but the
network; the absolute rates depend on the machine (see docs/inference.md).

Usage:
    python benchmarks/bench_detect.py --quick --threads 2
"""
import argparse
from typing import List, Optional

import cv2
import numpy as np
import torch

try:
    from benchmarks.common import (add_common_args, make_row, print_rows,
                                   setup_threads, time_interleaved)
except ImportError:  # run as a script
    from common import (add_common_args, make_row, print_rows, setup_threads,
                        time_interleaved)


def photos() -> dict:
    """The two inputs: a 640x480 photo and a 112x112 loose crop (RGB uint8)."""
    import skimage.data
    astro = skimage.data.astronaut()
    canvas = np.full((480, 640, 3), 120, np.uint8)
    canvas[:, 64:576] = cv2.resize(astro, (512, 480), interpolation=cv2.INTER_AREA)
    loose = cv2.resize(astro[30:210, 135:315], (112, 112),
                       interpolation=cv2.INTER_AREA)
    return {'640x480': canvas, '112x112 loose crop': loose}


def run(quick: bool = False, device: str = 'cpu',
        repeats: Optional[int] = None) -> List[dict]:
    """Run the benchmark.

    Args:
        quick (bool): 5 repeats (else 20).
        device (str): Where the detector runs.
        repeats (int, optional): Timed repeats (median).

    Returns:
        list[dict]: Two rows (images/s, baseline: the bare detector call).
    """
    import oaml_mm  # noqa: F401
    from oaml_mm.apis.face_finder import FaceFinder
    from oaml_mm.models.detectors import FaceDetector
    repeats = repeats or (5 if quick else 20)
    det = FaceDetector(device=device)
    finder = FaceFinder(det, detect='always')
    bare = det._mtcnn  # the library's own object, thresholds as ours
    bare.thresholds = list(det.thresholds)
    rows = []
    for name, img in photos().items():
        faces = finder.find(img, name)
        assert faces and faces[0]['path'] == 'detected-5pt', faces
        fns = {'bare': lambda: bare.detect(img, landmarks=True),
               'ours': lambda: finder.find(img, name)}
        with torch.no_grad():
            # Whichever runs second in a round measured ~8% slower here, so
            # both orders are timed and their medians averaged.
            t1 = time_interleaved(fns, repeats, torch.device(device))
            t2 = time_interleaved(dict(reversed(list(fns.items()))), repeats,
                                  torch.device(device))
        t = {k: (t1[k] + t2[k]) / 2 for k in fns}
        rows.append(make_row(
            f'photos/detect+align {name}', 1.0 / t['ours'], 'images/s',
            'bare MTCNN.detect', 1.0 / t['bare'],
            note='ratio < 1: our share of the time (checks, alignment)'))
    return rows


def main(argv=None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    rows = run(args.quick, args.device, args.repeats)
    print_rows(rows)
    return rows


if __name__ == '__main__':
    main()
