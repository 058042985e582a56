"""Visibility error of occlusion heads per occluder family, at the map and pixel level.

Renders SynthFace images again with the data set's own generator (same seed and
configuration as ``<data>/synthface.json``), so that every image comes with its
*pixel-level* mask (the ``.bin`` side files keep only the 7x7 grid):

* ``train_occluded``: the occlusion stream's images of the first training
  identities (``render_occluded``: the images the heads trained on);
* ``test``: test identities, style-A faces, training occluder families, each image
  clean and occluded (the stream of ``val/*.bin``);
* ``heldout``: held-out identities, style-B faces, held-out families, clean and
  occluded (the stream of ``val/heldout_*.bin``).

For each model (``NAME=CONFIG:CHECKPOINT``) it writes the mean absolute error of
the predicted visibility against the truth per set and family (``none`` = clean
faces): on the model's grid (7x7, area averages of the mask) and at the pixel
level (28x28 area averages; a head that predicts only the grid is upsampled
nearest, i.e. each cell's value for all its pixels).

Example (``STUDY=projects/occlusion_study/configs``)::

    python -m projects.occlusion_study.multiscale_head \\
        --model seed=configs/synthface/oaml_ir18_synthface.py:A/iter_500.pth \\
        --model ms=$STUDY/oaml_ir18_synthface_msocc.py:B/iter_500.pth \\
        --identities 40 --out work_dirs/msocc/vis_error.json
"""
import argparse
import json
import os.path as osp
import sys
from collections import defaultdict
from typing import Dict, List, Tuple

import numpy as np

PIXEL_GRID = 28


def render_sets(data_root: str, identities: int) -> Dict[str, dict]:
    """Images (RGB uint8 [N,112,112,3]), pixel masks and types of the three sets."""
    from oaml_mm.synthface.generator import (_OCC_OFFSET,
                                             HELDOUT_OCCLUSION_MIX, S_HELDOUT,
                                             S_VAL, VAL_OCCLUSION_MIX,
                                             SynthFaceConfig, _jpeg_roundtrip,
                                             _pick, render_occluded)
    from oaml_mm.synthface.identity import stream_rng
    from oaml_mm.synthface.render import (identity_texture, render_face,
                                          sample_nuisance)
    with open(osp.join(data_root, 'synthface.json')) as f:
        cfg = SynthFaceConfig(**json.load(f)['config'])
    splits = cfg.identity_splits()
    sets = {k: defaultdict(list) for k in ('train_occluded', 'test', 'heldout')}
    for ident in splits['train'][:identities]:
        for occ, img, vis in render_occluded(cfg, ident):
            s = sets['train_occluded']
            s['images'].append(img)
            s['masks'].append(vis.astype(np.float32))
            s['types'].append(occ)
    for name, idents, stream, mix, style in (
            ('test', splits['test'], S_VAL, VAL_OCCLUSION_MIX, 'A'),
            ('heldout', splits['heldout'], S_HELDOUT, HELDOUT_OCCLUSION_MIX,
             'B')):
        s = sets[name]
        for ident in idents[:identities]:
            tex = identity_texture(ident)
            rng = stream_rng(cfg.seed, stream, ident.index, _OCC_OFFSET * 2)
            types = [_pick(rng, mix) for _ in range(cfg.val_images_per_id)]
            for j, occ in enumerate(types):
                nuis = sample_nuisance(
                    stream_rng(cfg.seed, stream, ident.index, j), cfg.nuisance)
                r = render_face(
                    ident, nuis, occ,
                    stream_rng(cfg.seed, stream, ident.index, _OCC_OFFSET + j),
                    texture=tex, style=style)
                for img, vis, t in ((r.clean, np.ones_like(r.visibility), 'none'),
                                    (r.image, r.visibility, occ)):
                    s['images'].append(_jpeg_roundtrip(img, nuis.jpeg_quality)[1])
                    s['masks'].append(vis.astype(np.float32))
                    s['types'].append(t)
    return {k: {kk: (np.stack(vv) if kk != 'types' else vv)
                for kk, vv in v.items()} for k, v in sets.items()}


def predict(model, images: np.ndarray, batch: int = 64
            ) -> Tuple[np.ndarray, np.ndarray]:
    """Visibility on the model's grid [N,g,g] and on the pixel grid [N,28,28]."""
    import torch
    import torch.nn.functional as F
    model.eval()
    grid_out, pix_out = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2)
            data = model.data_preprocessor(dict(inputs=list(x)), False)
            inputs = data['inputs']
            vis = model.extract(inputs, flip_test=False)['visibility'].float()
            if getattr(model.neck, 'reads', 'maps') == 'stages':
                stages = model.backbone.forward_stages(inputs)
                logits = model.neck.forward_logits(
                    [stages[s - 1] for s in model.neck.stages])
                pix = F.adaptive_avg_pool2d(torch.sigmoid(logits.float()),
                                            PIXEL_GRID)
            else:
                pix = F.interpolate(vis, size=(PIXEL_GRID, PIXEL_GRID),
                                    mode='nearest')
            grid_out.append(vis[:, 0].numpy())
            pix_out.append(pix[:, 0].numpy())
    return np.concatenate(grid_out), np.concatenate(pix_out)


def errors(model, sets: Dict[str, dict]) -> Dict[str, dict]:
    from oaml_mm.datasets.transforms import visibility_to_grid
    from oaml_mm.evaluation.functional.visibility import visibility_mae
    out = {}
    for name, s in sets.items():
        grid, pix = predict(model, s['images'])
        g = grid.shape[-1]
        true_g = np.stack([visibility_to_grid(m, (g, g)) for m in s['masks']])
        true_p = np.stack([visibility_to_grid(m, (PIXEL_GRID, PIXEL_GRID))
                           for m in s['masks']])
        out[name] = dict(map=visibility_mae(grid, true_g, s['types']),
                         pixel=visibility_mae(pix, true_p, s['types']),
                         count={t: s['types'].count(t)
                                for t in sorted(set(s['types']))},
                         mean_visible_clean=float(
                             grid[np.asarray(s['types']) == 'none'].mean())
                         if 'none' in s['types'] else None)
    return out


def damage_stats(model, sets: Dict[str, dict]) -> Dict[str, dict]:
    """``1 - feature damage`` of the rendered clean/occluded pairs, by coverage.

    The ``test`` and ``heldout`` sets hold each face clean and occluded (same
    render): :func:`damage_visibility` of the backbone's maps of the two, averaged
    over the cells the occluder leaves visible (true visibility 1), covers partly
    and covers fully (<= 0.05).
    """
    import torch

    from oaml_mm.datasets.transforms import visibility_to_grid
    from oaml_mm.models.functional import damage_visibility
    out = {}
    model.eval()
    for name in ('test', 'heldout'):
        s = sets[name]
        types = np.asarray(s['types'])
        clean = s['images'][types == 'none']
        occ = s['images'][types != 'none']
        masks = s['masks'][types != 'none']
        maps = []
        with torch.no_grad():
            for imgs in (clean, occ):
                x = torch.from_numpy(imgs).permute(0, 3, 1, 2)
                inputs = model.data_preprocessor(dict(inputs=list(x)),
                                                 False)['inputs']
                maps.append(model.backbone(inputs)[0].float())
        g = maps[0].shape[-1]
        true = torch.from_numpy(np.stack(
            [visibility_to_grid(m, (g, g)) for m in masks]))[:, None]
        vis = damage_visibility(maps[0], maps[1], true)
        bins = dict(visible=true >= 0.999, partial=(true > 0.05) & (true < 0.999),
                    covered=true <= 0.05)
        out[name] = {k: float(vis[m].mean()) if bool(m.any()) else None
                     for k, m in bins.items()}
        out[name]['cells'] = {k: int(m.sum()) for k, m in bins.items()}
    return out


def table(results: Dict[str, dict]) -> List[str]:
    """Markdown rows: model, set, level, then all / per family."""
    lines = []
    for model, res in results.items():
        for set_name, r in res.items():
            for level in ('map', 'pixel'):
                fam = ', '.join(f'{t} {v:.3f}' for t, v in r[level].items()
                                if t != 'all')
                lines.append(f'| {model} | {set_name} | {level} | '
                             f'{r[level]["all"]:.3f} | {fam} |')
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', action='append', required=True,
                   help='NAME=CONFIG:CHECKPOINT (repeatable)')
    p.add_argument('--data-root', default='data/synthface')
    p.add_argument('--identities', type=int, default=40,
                   help='identities per set (default %(default)s)')
    p.add_argument('--out', default=None, help='JSON file for the numbers')
    p.add_argument('--damage', action='store_true',
                   help='also the feature-damage target of each backbone')
    args = p.parse_args(argv)

    import torch
    from mmengine.registry import init_default_scope

    from oaml_mm.apis import FaceRecognizer
    torch.set_num_threads(1)
    init_default_scope('oaml_mm')
    sets = render_sets(args.data_root, args.identities)
    results = {}
    damage = {}
    for spec in args.model:
        name, rest = spec.split('=', 1)
        config, ckpt = rest.rsplit(':', 1)
        model = FaceRecognizer(config, ckpt).model
        results[name] = errors(model, sets)
        if args.damage:
            damage[name] = damage_stats(model, sets)
    for line in table(results):
        print(line)
    for name, d in damage.items():
        print(f'damage target ({name} backbone): {json.dumps(d)}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(errors=results, damage=damage), f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
