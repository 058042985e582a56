"""Difficulty check of a SynthFace folder: how far do raw pixels get on each pair set?

Two training-free matchers score the verification ``.bin`` sets (10-fold accuracy,
the same protocol as the models):

* **whole face**: the aligned crop as a 28x28 grey image, standardised, cosine;
* **periocular band**: rows 36-66 and columns 20-92 of the aligned crop (eyes and
  brows, what a niqab leaves visible) in CIE Lab at 24x10, mean-removed, cosine.

With ``--by-type`` the best-threshold accuracy of each occlusion-type pair with at
least 60 pairs is printed as well (niqab-niqab pairs are the hard case: what the
band matcher reaches there is a floor of the identity information the opening
shows). See docs/synthface.md, "Measured".

Example:
    python -m projects.occlusion_study.synthface_pixel_baseline data/synthface --by-type
"""
import argparse
import os.path as osp
from typing import Dict

import cv2
import numpy as np

from oaml_mm.datasets.verification_bin import (load_side_files,
                                               load_verification_bin)
from oaml_mm.evaluation.functional import verification_10fold_scores

SETS = ('clean', 'masked', 'occluded')
#: Periocular band of a 112x112 ArcFace-aligned crop (rows, columns).
BAND = (slice(36, 66), slice(20, 92))


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), -1).astype(np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def face_descriptor(images: np.ndarray) -> np.ndarray:
    """Unit 28x28 grey descriptors of BGR uint8 crops [N, 112, 112, 3]."""
    grey = [cv2.resize(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), (28, 28),
                       interpolation=cv2.INTER_AREA) for im in images]
    g = np.stack(grey).reshape(len(images), -1).astype(np.float64)
    g = (g - g.mean(1, keepdims=True)) / np.maximum(g.std(1, keepdims=True), 1e-6)
    return _unit(g)


def band_descriptor(images: np.ndarray) -> np.ndarray:
    """Unit Lab descriptors of the periocular band of BGR uint8 crops."""
    lab = [cv2.resize(cv2.cvtColor(im[BAND], cv2.COLOR_BGR2LAB), (24, 10),
                      interpolation=cv2.INTER_AREA) for im in images]
    return _unit(np.stack(lab))


def best_threshold_accuracy(scores: np.ndarray, issame: np.ndarray) -> float:
    """Accuracy (%) at the best single threshold (optimistic; for small subsets)."""
    order = np.argsort(-scores)
    ys = issame[order]
    tp = np.cumsum(ys)
    tn = (~issame).sum() - np.cumsum(~ys)
    return float(100 * max(((tp + tn) / len(issame)).max(),
                           issame.mean(), 1 - issame.mean()))


def evaluate(root: str, by_type: bool = False) -> Dict[str, dict]:
    """10-fold accuracy (%) of both matchers on every ``.bin`` set of ``root``."""
    out = {}
    for name in SETS:
        path = osp.join(root, 'val', f'{name}.bin')
        blobs, issame = load_verification_bin(path)
        issame = np.asarray(issame, bool)
        imgs = np.stack([cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
                         for b in blobs])
        res = {}
        scores = {}
        for key, fn in (('face', face_descriptor), ('band', band_descriptor)):
            d = fn(imgs)
            scores[key] = np.sum(d[0::2] * d[1::2], axis=1)
            res[key] = 100 * verification_10fold_scores(scores[key], issame,
                                                        10)['accuracy']
        if by_type:
            _, types = load_side_files(path, len(blobs))
            if types is not None:
                pair = np.array([f'{a}|{b}' for a, b in zip(types[0::2],
                                                            types[1::2])])
                res['by_type'] = {
                    t: {k: best_threshold_accuracy(s[pair == t], issame[pair == t])
                        for k, s in scores.items()} | {'pairs': int((pair == t).sum())}
                    for t in sorted(set(pair.tolist())) if (pair == t).sum() >= 60}
        out[name] = res
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('root', help='SynthFace folder (with val/*.bin)')
    p.add_argument('--by-type', action='store_true',
                   help='also per occlusion-type pair (best-threshold accuracy)')
    args = p.parse_args(argv)
    res = evaluate(args.root, args.by_type)
    print('| set | whole face (28x28 grey) | periocular band (Lab) |')
    print('|---|---|---|')
    for name in SETS:
        print(f"| {name} | {res[name]['face']:.1f} | {res[name]['band']:.1f} |")
    if args.by_type:
        for name in SETS:
            for t, r in res[name].get('by_type', {}).items():
                print(f"{name:9s} {t:28s} pairs={r['pairs']:4d} "
                      f"face={r['face']:.1f} band={r['band']:.1f}")


if __name__ == '__main__':
    main()
