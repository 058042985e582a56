"""Data loading benchmark: MXNet ``.rec`` decode throughput on one core.

Writes a temporary ``train.rec`` of 112x112 JPEG faces (quality 95, textured so the
files are about the size of MS1MV2's) and times, in one process with one OpenCV thread:

* ``rec_decode``: ``MXFaceDataset[i]`` without a pipeline (index lookup, pread,
  RecordIO framing, IRHeader, JPEG decode, BGR->RGB), against ``cv2.imdecode`` of the
  same JPEG bytes already in memory (the floor any reader pays);
* ``rec_decode_augment``: the same with the AdaFace training pipeline
  (FaceAugmenter p=0.2 each, flip, PackFaceInputs), against the same baseline;
* ``random_occlusion``: ``RandomOcclusion(prob=1)`` (default generator) on the decoded
  112x112 images, against ``MedicalMaskOcclusion(prob=1)`` on the same images (the
  occlusion transform every demo pipeline already pays for).

Usage:
    python benchmarks/bench_data.py            # 2000 images, 3 repeats
    python benchmarks/bench_data.py --quick    # 300 images, 1 repeat
"""
import argparse
import os.path as osp
import sys
import tempfile
import time
from typing import List

import cv2
import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def _faces(n: int, seed: int = 0) -> List[bytes]:
    rng = np.random.RandomState(seed)
    out = []
    for i in range(n):
        noise = rng.randint(0, 256, (28, 28, 3)).astype(np.uint8)
        img = cv2.resize(noise, (112, 112), interpolation=cv2.INTER_CUBIC)
        cv2.ellipse(img, (56, 62), (36, 48), 0, 0, 360,
                    tuple(int(v) for v in rng.randint(120, 230, 3)), -1)
        cv2.GaussianBlur(img, (3, 3), 0, dst=img)
        img = cv2.add(img, rng.randint(0, 24, img.shape).astype(np.uint8))
        ok, buf = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        out.append(buf.tobytes())
    return out


def _rate(fn, n: int, repeats: int) -> float:
    best = float('inf')
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def run(quick: bool = False) -> List[dict]:
    """Run the benchmark.

    Args:
        quick (bool): Fewer images and one repeat.

    Returns:
        list[dict]: Rows with ``name``, ``value``, ``unit``, ``baseline_name``,
        ``baseline_value``, ``ratio`` (value / baseline_value).
    """
    import torch

    import oaml_mm  # noqa: F401
    from oaml_mm.datasets import (MedicalMaskOcclusion, MXFaceDataset,
                                  RandomOcclusion, write_insightface_rec)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    n = 300 if quick else 2000
    repeats = 1 if quick else 3
    jpegs = _faces(n)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_insightface_rec(tmp, [(b, i % 100) for i, b in enumerate(jpegs)],
                              num_classes=100)
        plain = MXFaceDataset(tmp)
        aug = MXFaceDataset(tmp, pipeline=[
            dict(type='FaceAugmenter'), dict(type='FaceRandomFlip'),
            dict(type='PackFaceInputs')])
        plain[0]
        aug[0]

        def baseline():
            for b in jpegs:
                cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)

        base = _rate(baseline, n, repeats)
        dec = _rate(lambda: [plain[i] for i in range(n)], n, repeats)
        np.random.seed(0)
        full = _rate(lambda: [aug[i] for i in range(n)], n, repeats)
        kb = float(np.mean([len(b) for b in jpegs])) / 1024
        imgs = [plain[i]['img'] for i in range(n)]
        rand_occ, med_occ = RandomOcclusion(prob=1.0), MedicalMaskOcclusion(prob=1.0)
        med_occ(dict(img=imgs[0].copy()))  # loads the template
        np.random.seed(0)
        rand = _rate(lambda: [rand_occ(dict(img=im)) for im in imgs], n, repeats)
        np.random.seed(0)
        med = _rate(lambda: [med_occ(dict(img=im)) for im in imgs], n, repeats)
    for name, value in (('rec_decode', dec), ('rec_decode_augment', full)):
        rows.append(dict(name=name, value=round(value, 1), unit='images/s/core',
                         baseline_name='cv2.imdecode_in_memory',
                         baseline_value=round(base, 1),
                         ratio=round(value / base, 3),
                         note=f'{n} JPEGs of 112x112, {kb:.1f} KiB each'))
    rows.append(dict(name='random_occlusion', value=round(rand, 1),
                     unit='images/s/core', baseline_name='MedicalMaskOcclusion',
                     baseline_value=round(med, 1), ratio=round(rand / med, 3),
                     note=f'{n} images of 112x112, 1-3 occluders each, '
                     f'{1e3 / rand:.3f} ms/image'))
    return rows


def main(argv=None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true',
                        help='300 images, one repeat')
    args = parser.parse_args(argv)
    rows = run(args.quick)
    for r in rows:
        print(f"{r['name']:<22} {r['value']:>9.1f} {r['unit']}   "
              f"{r['baseline_name']} {r['baseline_value']:.1f}   "
              f"ratio {r['ratio']:.3f}   ({r['note']})")
    return rows


if __name__ == '__main__':
    main()
