"""Held-out comparison of the z-sum fusion and the visibility-aware fusion.

Scores the pairs of verification ``.bin`` sets with CONFIG's model and CHECKPOINT,
fits :func:`~oaml_mm.evaluation.functional.fit_visibility_fusion` on the pairs of
the ``--fit`` sets and reports, on the pairs of the ``--eval`` sets, 10-fold
accuracy, AUC and TAR@FAR of the cosine, QAConv, the z-sum (impostor statistics of
the fit pairs) and ``fused_vis``. With ``--halves`` every set is split instead by
pair parity: fit on the even pairs of all sets, evaluate on the odd ones, and the
other way round (figures averaged). Nothing is fitted on the evaluated pairs.

Examples:
    python -m projects.occlusion_study.fusion_heldout \
        configs/synthface/oaml_ir18_synthface.py \
        work_dirs/oaml_ir18_synthface/iter_500.pth --bins data/synthface/val \
        --fit clean masked --eval occluded
"""
import argparse
import json
import os.path as osp
import sys

import numpy as np


def score_set(rec, path: str, batch: int, chunk: int = 1024) -> dict:
    """Cosine, QAConv and both faces' mean visibility of every pair of a .bin."""
    import cv2
    import torch

    from oaml_mm.datasets.verification_bin import load_verification_bin
    from oaml_mm.evaluation.functional import mean_visibility
    images, issame = load_verification_bin(path)
    feats = []
    for s in range(0, len(images), batch):
        arrs = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
                for b in images[s:s + batch]]
        f = rec.extract(arrs, channel_order='bgr', return_feature_maps=True)
        feats.append({k: v for k, v in f.items()})
    f = {k: torch.cat([p[k] for p in feats]) for k in feats[0]}
    cos, q = [], []
    for s in range(0, len(issame), chunk):
        idx = torch.arange(s, min(s + chunk, len(issame)))
        a = {k: v[2 * idx] for k, v in f.items()}
        b = {k: v[2 * idx + 1] for k, v in f.items()}
        out = rec.score_pairs(a, b)
        cos.append(out['adaface'])
        q.append(out['qaconv'])
    v = mean_visibility(f['visibility'])
    return dict(adaface=np.concatenate(cos), qaconv=np.concatenate(q),
                vis_a=v[0::2], vis_b=v[1::2],
                labels=np.asarray(issame, bool))


def _take(sets, names, keep=None):
    parts = [sets[n] for n in names]
    out = {}
    for k in parts[0]:
        vals = []
        for p in parts:
            x = p[k]
            vals.append(x if keep is None else x[keep(len(x))])
        out[k] = np.concatenate(vals)
    return out


def evaluate(fit: dict, ev: dict, fars) -> dict:
    """Figures of every branch on ``ev`` with fusion fitted on ``fit``."""
    from oaml_mm.evaluation.functional import (apply_visibility_fusion, auc,
                                               fit_visibility_fusion,
                                               fuse_scores, impostor_stats,
                                               tar_at_far,
                                               verification_10fold_scores)
    params = fit_visibility_fusion(fit['adaface'], fit['qaconv'],
                                   fit['vis_a'], fit['vis_b'], fit['labels'])
    stats = [impostor_stats(fit['adaface'], fit['labels']),
             impostor_stats(fit['qaconv'], fit['labels'])]
    y = ev['labels']
    scores = dict(
        adaface=ev['adaface'], qaconv=ev['qaconv'],
        fused=fuse_scores([ev['adaface'], ev['qaconv']], (0.5, 0.5), stats),
        fused_vis=apply_visibility_fusion(params, ev['adaface'], ev['qaconv'],
                                          ev['vis_a'], ev['vis_b']))
    out = {}
    for b, s in scores.items():
        r = {'accuracy': 100 * verification_10fold_scores(s, y)['accuracy'],
             'AUC': 100 * auc(s, y)}
        for far, tar in tar_at_far(s, y, fars).items():
            r[f'TAR@FAR={far:.0e}'] = 100 * tar
        out[b] = r
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--bins', required=True, help='folder of the .bin sets')
    p.add_argument('--fit', nargs='+', default=['clean', 'masked'])
    p.add_argument('--eval', nargs='+', default=['occluded'])
    p.add_argument('--halves', action='store_true',
                   help='fit/evaluate on the even/odd pairs of every set')
    p.add_argument('--fars', type=float, nargs='+', default=[1e-2, 1e-1])
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--out', help='write the figures as JSON')
    args = p.parse_args(argv)

    from oaml_mm.apis import FaceRecognizer
    from oaml_mm.errors import OAMLError
    try:
        rec = FaceRecognizer(args.config, args.checkpoint)
        names = sorted(set(args.fit) | set(args.eval))
        sets = {n: score_set(rec, osp.join(args.bins, f'{n}.bin'),
                             args.batch_size) for n in names}
    except OAMLError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    results = {}
    if args.halves:
        even = lambda n: np.arange(n) % 2 == 0  # noqa: E731
        odd = lambda n: np.arange(n) % 2 == 1  # noqa: E731
        for n in names:
            runs = [evaluate(_take(sets, names, a), _take(sets, [n], b),
                             args.fars) for a, b in ((even, odd), (odd, even))]
            results[n] = {br: {k: float(np.mean([r[br][k] for r in runs]))
                               for k in runs[0][br]} for br in runs[0]}
    else:
        fit = _take(sets, args.fit)
        for n in args.eval:
            results[n] = evaluate(fit, sets[n], args.fars)
    how = ('halves of ' + '+'.join(names)) if args.halves else \
        f'fit on {"+".join(args.fit)}'
    for n, res in results.items():
        print(f'\n{n} ({how})')
        cols = list(next(iter(res.values())))
        print('| branch | ' + ' | '.join(cols) + ' |')
        print('|---' * (len(cols) + 1) + '|')
        for b, r in res.items():
            print(f'| {b} | ' + ' | '.join(f'{r[c]:.2f}' for c in cols) + ' |')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
