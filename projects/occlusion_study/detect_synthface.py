"""Face detection and alignment on SynthFace's unaligned mini IJB-C crops.

Renders the loose crops of the mini IJB-C subjects in memory (the images
``tools/dataset_converters/make_synthface.py`` writes to ``ijbc/loose_crop/``, with
their occluder type, which the files do not record), runs
:class:`~oaml_mm.apis.FaceFinder` on each and reports:

* detection rate, clean and per occluder (a detection counts when its eye centres
  lie within half an eye distance of the given ones);
* landmark error against the given landmarks (the generator's true points plus
  0.8 px of noise, as written to ``ijbc_name_5pts_score.txt``): mean and 95th
  percentile in pixels, all five points, eyes, nose + mouth;
* which alignment path was taken;
* verification TAR@FAR of image pairs (every genuine pair, every impostor pair) with
  a trained model (``--config``/``--checkpoint``: its AdaFace cosine and QAConv
  score) and two training-free pixel matchers (whole face 28x28 grey, periocular
  band; see ``synthface_pixel_baseline.py``) on crops aligned with the given
  landmarks, the detected five points, and the detected eyes alone, on the images
  where detection succeeded (the same set for all three);
* the box fallback: for the images the detector misses, alignment from the face
  box the IJB-C metadata gives (``given-box``: detection retried inside the box,
  else the mean landmark layout of the box), with its landmark error;
* the mean landmark layout inside a detector box (``BOX_LANDMARKS``).

Example:
    python -m projects.occlusion_study.detect_synthface --subjects 60 --occluded 0.5 \\
        --out projects/occlusion_study/results/detect_synthface.json
"""
import argparse
import json
import time
from collections import defaultdict

import cv2
import numpy as np
import torch

from oaml_mm.apis.face_finder import FaceFinder, eye_landmarks
from oaml_mm.datasets.transforms import AlignFace5Points
from oaml_mm.errors import ImageInputError
from oaml_mm.evaluation.functional import tar_at_far
from oaml_mm.synthface.generator import SynthFaceConfig, render_ijbc
from projects.occlusion_study.synthface_pixel_baseline import (band_descriptor,
                                                               face_descriptor)

FARS = (1e-3, 1e-2, 1e-1)


def _pct(values, q):
    return float(np.percentile(values, q)) if len(values) else float('nan')


def _pairs(labels: np.ndarray):
    i, j = np.triu_indices(len(labels), 1)
    return i, j, labels[i] == labels[j]


def model_scores(recognizer, crops: np.ndarray, i: np.ndarray,
                 j: np.ndarray) -> dict:
    """Pair scores of a trained model on aligned RGB crops [N, 112, 112, 3].

    Returns:
        dict: ``{'OAML adaface': [P], 'OAML qaconv': [P]}`` (QAConv when the model
        has the branch), pairs ``(i[k], j[k])``.
    """
    images = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2)
    embs, maps, vis = [], [], []
    qaconv = 'qaconv' in recognizer.available_branches()
    for s in range(0, len(images), 64):
        out = recognizer.extract(images[s:s + 64], channel_order='rgb',
                                 return_feature_maps=qaconv)
        embs.append(out['embedding'])
        if qaconv:
            maps.append(out['feature_map'].float())
            vis.append(out['visibility'].float())
    emb = torch.cat(embs)
    ti, tj = torch.from_numpy(i), torch.from_numpy(j)
    res = {'OAML adaface': (emb[ti] * emb[tj]).sum(1).numpy()}
    if qaconv:
        m, v = torch.cat(maps), torch.cat(vis)
        q = []
        with torch.no_grad():
            for s in range(0, len(ti), 4096):
                a, b = ti[s:s + 4096], tj[s:s + 4096]
                q.append(recognizer.model.match_pairs(m[a], m[b], v[a], v[b]))
        res['OAML qaconv'] = torch.cat(q).float().numpy()
    return res


def evaluate(subjects: int, occluded: float, seed: int, tolerance: float,
             recognizer=None) -> dict:
    cfg = SynthFaceConfig(seed=seed, ijbc_occluded=occluded)
    test_ids = cfg.identities_all()[cfg.identities:][:subjects]
    finder = FaceFinder(tolerance=tolerance, detect='always')
    align = AlignFace5Points((112, 112))
    rows = []
    t0 = time.time()
    for ident in test_ids:
        for im in render_ijbc(cfg, ident):
            img = cv2.imdecode(np.frombuffer(im.jpeg, np.uint8),
                               cv2.IMREAD_COLOR)[:, :, ::-1].copy()
            given = im.landmarks.astype(np.float32)
            iod = float(np.linalg.norm(given[1] - given[0]))
            row = dict(subject=ident.index, occ=im.occlusion, found=False,
                       given=align.transform(dict(img=img, landmarks=given))['img'])
            try:
                face = finder.find(img, 'x')[0]
                lmk = np.asarray(face['landmarks'], np.float32)
                eye_err = np.linalg.norm(lmk[:2] - given[:2], axis=1)
                missed = eye_err.max() > 0.5 * iod  # found something else
            except ImageInputError:
                missed = True
            if missed:
                x, y, w, h = im.box
                box = (max(0, x), max(0, y), min(img.shape[1], x + w),
                       min(img.shape[0], y + h))
                fb = finder._from_box(img, box, 'x', dict(
                    image='x', score=None, box=None, landmarks=None, note=''))
                fb_err = np.linalg.norm(np.asarray(fb['landmarks']) - given, axis=1)
                row.update(box_err=float(fb_err.mean()),
                           box_detected=fb['score'] is not None)
                rows.append(row)
                continue
            err = np.linalg.norm(lmk - given, axis=1)
            x1, y1, x2, y2 = face['box']
            row.update(found=True, path=face['path'], score=face['score'],
                       err=float(err.mean()), err_eyes=float(err[:2].mean()),
                       err_lower=float(err[2:].mean()),
                       box_rel=((lmk - [x1, y1]) / [x2 - x1, y2 - y1]).tolist(),
                       five=align.transform(dict(img=img, landmarks=lmk))['img'],
                       eyes=align.transform(dict(
                           img=img, landmarks=eye_landmarks(lmk[:2])))['img'])
            rows.append(row)
    seconds = time.time() - t0
    groups = defaultdict(list)
    for r in rows:
        groups['all'].append(r)
        groups['clean' if r['occ'] == 'none' else r['occ']].append(r)
        if r['occ'] != 'none':
            groups['any occluder'].append(r)
    table = {}
    for name, rs in groups.items():
        hit = [r for r in rs if r['found']]
        paths = defaultdict(int)
        for r in hit:
            paths[r['path']] += 1
        table[name] = dict(
            images=len(rs), detected=len(hit),
            rate=len(hit) / max(1, len(rs)),
            err_mean=float(np.mean([r['err'] for r in hit])) if hit else None,
            err_p95=_pct([r['err'] for r in hit], 95),
            eyes_mean=float(np.mean([r['err_eyes'] for r in hit])) if hit else None,
            eyes_p95=_pct([r['err_eyes'] for r in hit], 95),
            lower_mean=float(np.mean([r['err_lower'] for r in hit]))
            if hit else None,
            lower_p95=_pct([r['err_lower'] for r in hit], 95),
            paths=dict(paths),
            box_fallback=len(rs) - len(hit),
            box_detected=sum(1 for r in rs if r.get('box_detected')),
            box_err_mean=float(np.mean([r['box_err'] for r in rs
                                        if 'box_err' in r]))
            if len(rs) > len(hit) else None,
            box_err_p95=_pct([r['box_err'] for r in rs if 'box_err' in r], 95))
    hit = [r for r in rows if r['found']]
    labels = np.array([r['subject'] for r in hit])
    i, j, same = _pairs(labels)
    verification = {}
    for desc_name, desc in (('whole face', face_descriptor),
                            ('periocular band', band_descriptor)):
        for key in ('given', 'five', 'eyes'):
            # The matchers take BGR crops.
            feats = desc(np.stack([r[key][:, :, ::-1] for r in hit]))
            scores = (feats[i] * feats[j]).sum(1)
            verification[f'{desc_name} / {key}'] = {
                str(k): v for k, v in tar_at_far(scores, same, FARS).items()}
    if recognizer is not None:
        for key in ('given', 'five', 'eyes'):
            crops = np.stack([r[key] for r in hit])
            for name, scores in model_scores(recognizer, crops, i, j).items():
                verification[f'{name} / {key}'] = {
                    str(k): v for k, v in tar_at_far(scores, same, FARS).items()}
    box_rel = np.array([r['box_rel'] for r in hit])
    return dict(subjects=len(test_ids), occluded_fraction=occluded, seed=seed,
                tolerance=tolerance, seconds=seconds, by_group=table,
                verification=dict(pairs=int(len(same)), genuine=int(same.sum()),
                                  images=len(hit), tar_at_far=verification),
                box_landmarks_mean=box_rel.mean(0).round(3).tolist())


def markdown(res: dict) -> str:
    lines = ['| images | n | detected | landmark error mean / p95 (px) | '
             'eyes mean / p95 | nose+mouth mean / p95 | paths |',
             '|---|---|---|---|---|---|---|']
    order = ['all', 'clean', 'any occluder'] + sorted(
        k for k in res['by_group'] if k not in ('all', 'clean', 'any occluder'))
    for k in order:
        t = res['by_group'][k]
        if t['err_mean'] is None:
            lines.append(f'| {k} | {t["images"]} | {100 * t["rate"]:.1f}% | - | - '
                         '| - | - |')
            continue
        paths = ', '.join(f'{p} {n}' for p, n in sorted(t['paths'].items()))
        lines.append(
            f'| {k} | {t["images"]} | {100 * t["rate"]:.1f}% | '
            f'{t["err_mean"]:.2f} / {t["err_p95"]:.2f} | '
            f'{t["eyes_mean"]:.2f} / {t["eyes_p95"]:.2f} | '
            f'{t["lower_mean"]:.2f} / {t["lower_p95"]:.2f} | {paths} |')
    lines += ['', 'Box fallback on the missed images (IJB-C face box given):', '',
              '| images | missed | re-detected inside the box | landmark error '
              'mean / p95 (px) |', '|---|---|---|---|']
    for k in order:
        t = res['by_group'][k]
        if t['box_fallback']:
            lines.append(f'| {k} | {t["box_fallback"]} | {t["box_detected"]} | '
                         f'{t["box_err_mean"]:.2f} / {t["box_err_p95"]:.2f} |')
    v = res['verification']
    lines += ['', f'Verification on the {v["images"]} detected images '
              f'({v["pairs"]} pairs, {v["genuine"]} genuine), TAR (%) at FAR:', '',
              '| matcher / landmarks | ' + ' | '.join(f'{f:g}' for f in FARS) +
              ' |', '|---|' + '---|' * len(FARS)]
    for k, tars in v['tar_at_far'].items():
        lines.append(f'| {k} | ' + ' | '.join(
            f'{100 * tars[str(f)]:.1f}' for f in FARS) + ' |')
    return '\n'.join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--subjects', type=int, default=60)
    p.add_argument('--occluded', type=float, default=0.5,
                   help='fraction of images with an occluder (the data set '
                   'default is 0.2; more gives per-occluder figures)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--tolerance', type=float, default=0.4,
                   help='landmark plausibility tolerance (eye distances)')
    p.add_argument('--out', help='write the figures as JSON')
    p.add_argument('--config', help='also score the pairs with this trained model')
    p.add_argument('--checkpoint', help='its checkpoint (with --config)')
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    recognizer = None
    if args.config:
        from oaml_mm.apis import FaceRecognizer
        recognizer = FaceRecognizer(args.config, args.checkpoint)
    res = evaluate(args.subjects, args.occluded, args.seed, args.tolerance,
                   recognizer)
    print(markdown(res))
    print(f'\n{res["seconds"]:.0f} s; mean landmarks in the box: '
          f'{res["box_landmarks_mean"]}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(res, f, indent=1)


if __name__ == '__main__':
    main()
