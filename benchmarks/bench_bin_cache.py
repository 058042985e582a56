"""Validation-pass speed-up of the decoded ``.bin`` cache (``decoded_cache=True``).

Writes a temporary verification ``.bin`` of 112x112 JPEG faces (quality 95, textured
like ``bench_data.py``'s) and times, in one process with one OpenCV thread:

* ``data pass``: every sample of ``VerificationBinDataset`` through
  ``PackFaceInputs``, decoding the JPEGs (baseline) against reading the memory-mapped
  cache;
* ``validation pass``: the same plus the forward pass of the SynthFace demo model
  (IR-18, width 0.25, ``extract`` with feature maps) in batches of 128, i.e. what a
  ``FaceValLoop`` does per ``.bin`` apart from the metric;
* ``cache build``: the one-off cost of the first ``decoded_cache=True`` load
  (decode every image + write the array), against one decoding data pass.

Usage:
    python benchmarks/bench_bin_cache.py --threads 2          # 2000 images
    python benchmarks/bench_bin_cache.py --quick              # 300 images
"""
import argparse
import os.path as osp
import sys
import tempfile
import time
from typing import List

import cv2
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

try:
    from benchmarks.bench_data import _faces
    from benchmarks.common import (add_common_args, make_row, print_rows,
                                   setup_threads)
except ImportError:  # run as a script
    from bench_data import _faces
    from common import add_common_args, make_row, print_rows, setup_threads

from oaml_mm.datasets import VerificationBinDataset, write_verification_bin
from oaml_mm.registry import MODELS

DEMO_MODEL = dict(
    type='OAMLRecognizer',
    backbone=dict(type='IResNet', depth=18, width_mult=0.25,
                  embedding_size=128),
    neck=dict(type='OcclusionHead', in_channels=128, hidden_channels=32),
    head=dict(type='AdaFaceHead', in_channels=128, num_classes=400),
    qaconv_head=dict(type='QAConvHead', in_channels=128))


def _best(fn, repeats: int) -> float:
    best = float('inf')
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(quick: bool = False, repeats: int = 2, forward: bool = True
        ) -> List[dict]:
    n = 300 if quick else 2000
    cv2.setNumThreads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'val.bin')
        write_verification_bin(path, _faces(n), [True] * (n // 2))
        pipe = [dict(type='PackFaceInputs')]
        plain = VerificationBinDataset(ann_file=path, pipeline=pipe)
        plain.full_init()
        t0 = time.perf_counter()
        cached = VerificationBinDataset(ann_file=path, pipeline=pipe,
                                        decoded_cache=True)
        cached.full_init()
        build = time.perf_counter() - t0

        def data_pass(ds):
            return lambda: [ds[i] for i in range(len(ds))]

        t_plain = _best(data_pass(plain), repeats)
        t_cached = _best(data_pass(cached), repeats)
        rows.append(make_row(f'data pass, {n} images, cached', n / t_cached,
                             'images/s', 'decoding the JPEGs', n / t_plain))
        rows.append(make_row('cache build (first load)', build, 's',
                             'one decoding data pass', t_plain,
                             higher_is_better=False))
        if forward:
            torch.manual_seed(0)
            model = MODELS.build(DEMO_MODEL).eval()

            def val_pass(ds):

                def fn():
                    with torch.no_grad():
                        for b in range(0, len(ds), 128):
                            batch = [ds[i] for i in range(b, min(len(ds),
                                                                 b + 128))]
                            data = model.data_preprocessor(
                                dict(inputs=[s['inputs'] for s in batch],
                                     data_samples=[s['data_samples']
                                                   for s in batch]), False)
                            model.extract(data['inputs'],
                                          return_feature_maps=True)

                return fn

            v_plain = _best(val_pass(plain), repeats)
            v_cached = _best(val_pass(cached), repeats)
            rows.append(make_row(
                'validation pass (IR-18 w0.25 forward), cached', n / v_cached,
                'images/s', 'decoding the JPEGs', n / v_plain))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_common_args(parser)
    parser.add_argument('--no-forward', action='store_true',
                        help='time the data pass only')
    args = parser.parse_args()
    setup_threads(args.threads)
    print_rows(run(args.quick, args.repeats or (1 if args.quick else 2),
                   not args.no_forward))


if __name__ == '__main__':
    main()
