"""Visibility predictors compared: the occlusion head on last-stage maps vs the
image-reading OcclusionSegmenter (report: visibility_predictors.md, same folder).

Subcommands:

* ``errors``: mean absolute error of the predicted visibility, per occluder family,
  at the 7x7 map and at 28x28 (pixel level: 4x4-pixel blocks), on SynthFace faces
  re-rendered with their full-resolution masks (the test identities with training
  occluders, style A; the held-out identities with held-out occluders, style B;
  clean versions of both, all visible), on the training occluded set, and on real
  photos shipped inside installed packages (real_faces.py, same folder: aligned
  with the package's MTCNN path, split by image into train / test / portraits),
  clean and with occluders pasted on them, reported per part (``real_train``,
  ``real_test``, ``real_portraits`` and ``real_heldout`` = test + portraits, the
  part any aim is judged on);
* ``swap``: an OAML checkpoint whose occlusion head is replaced by a segmenter
  checkpoint (frozen), for ``tools/calibrate.py`` and ``tools/test.py`` with
  ``configs/synthface/oaml_ir18_synthface_segmenter.py``;
* ``cost``: inference time per image of each predictor (one thread);
* ``table``: the recognition table of tools/test.py metrics files against the
  baseline's.

Run from the repository root with oaml_mm importable (installed, or
``PYTHONPATH=.``). Examples:
    python projects/occlusion_study/visibility_predictors.py errors \\
        --head CONFIG CKPT --segmenter seg0=SEG_CKPT0 --segmenter seg1=SEG_CKPT1 \\
        --out errors.json
    python projects/occlusion_study/visibility_predictors.py swap OAML_CKPT \\
        SEG_CKPT OUT.pth
"""
import argparse
import json
import os.path as osp
import time
from collections import defaultdict
from typing import Callable, Dict, List, Tuple

import cv2
import numpy as np
import torch

from oaml_mm.apis import FaceRecognizer
from oaml_mm.apis.runner_setup import exit_on_error
from oaml_mm.datasets.occlusion_mask_dataset import mask_to_visibility
from oaml_mm.datasets.transforms import (MedicalMaskOcclusion, RandomOcclusion,
                                         visibility_to_grid)
from oaml_mm.registry import MODELS
from oaml_mm.synthface import generator as G
from oaml_mm.synthface.render import (encode_jpeg, identity_texture,
                                      render_face, sample_nuisance)
from oaml_mm.utils import atomic_save, load_config
from oaml_mm.utils.checkpoint import safe_load_checkpoint
from projects.occlusion_study.real_faces import align_photos, package_photos

Predictor = Callable[[torch.Tensor], Tuple[np.ndarray, np.ndarray]]
SEG_CONFIG = 'configs/synthface/occlusion_segmenter_synthface.py'


# ----------------------------------------------------------------- predictors
def head_predictor(config: str, checkpoint: str) -> Predictor:
    """The OAML model's own neck (occlusion head on its maps): 7x7, and the 7x7
    copied onto 28x28 (what it says about each 4x4-pixel block)."""
    model = FaceRecognizer(config, checkpoint).model.eval()

    @torch.no_grad()
    def run(crops: torch.Tensor):
        x = model.data_preprocessor.normalize(crops)
        maps = model.backbone(x)[0]
        v7 = model.predict_visibility(maps, x)[:, 0].float().numpy()
        return v7, np.repeat(np.repeat(v7, 4, 1), 4, 2)

    return run


def segmenter_predictor(checkpoint: str, config: str = SEG_CONFIG) -> Predictor:
    cfg = load_config(config)
    model = MODELS.build(cfg.model)
    state = safe_load_checkpoint(checkpoint, decode=False)
    model.load_state_dict(state.get('state_dict', state))
    model.eval()

    @torch.no_grad()
    def run(crops: torch.Tensor):
        x = model.data_preprocessor.normalize(crops)
        v28 = model.segmenter(x)
        v7 = torch.nn.functional.avg_pool2d(v28, 4)
        return v7[:, 0].numpy(), v28[:, 0].numpy()

    return run


def predict(pred: Predictor, crops: np.ndarray, batch: int = 64):
    """crops uint8 [N, 112, 112, 3] RGB -> (v7 [N,7,7], v28 [N,28,28])."""
    v7, v28 = [], []
    for i in range(0, len(crops), batch):
        t = torch.from_numpy(np.ascontiguousarray(
            crops[i:i + batch].transpose(0, 3, 1, 2)))
        a, b = pred(t)
        v7.append(a)
        v28.append(b)
    return np.concatenate(v7), np.concatenate(v28)


# ----------------------------------------------------------------- data
def render_split(data_root: str, split: str, identities: int) -> List[dict]:
    """Re-render ``identities`` people of a SynthFace split with full masks.

    ``split``: ``'val'`` (test identities, training occluders, style A; the
    stream of val/clean|masked|occluded.bin) or ``'heldout'`` (held-out
    identities, held-out occluders, style B; val/heldout_*.bin). Each image comes
    twice: the clean version (family ``clean``, all visible) and the occluded one.
    Images go through the JPEG round trip of the .bin files.
    """
    meta = json.load(open(osp.join(data_root, 'synthface.json')))
    cfg = G.SynthFaceConfig(**meta['config'])
    key = 'test' if split == 'val' else 'heldout'
    stream = G.S_VAL if split == 'val' else G.S_HELDOUT
    mix = G.VAL_OCCLUSION_MIX if split == 'val' else G.HELDOUT_OCCLUSION_MIX
    style = 'A' if split == 'val' else 'B'
    out = []
    for ident in cfg.identity_splits()[key][:identities]:
        tex = identity_texture(ident)
        rng = G.stream_rng(cfg.seed, stream, ident.index, G._OCC_OFFSET * 2)
        types = [G._pick(rng, mix) for _ in range(cfg.val_images_per_id)]
        if split == 'val' and not any(t in G.MASKED_PROBE_TYPES
                                      for t in types):
            types[int(rng.integers(len(types)))] = G.MASKED_PROBE_TYPES[
                int(rng.integers(2))]
        for j, t in enumerate(types):
            nuis = sample_nuisance(
                G.stream_rng(cfg.seed, stream, ident.index, j), cfg.nuisance)
            kw = dict(texture=tex) if split == 'val' else dict(
                texture=tex, style=style)
            r = render_face(ident, nuis, t, G.stream_rng(
                cfg.seed, stream, ident.index, G._OCC_OFFSET + j), **kw)
            for img, vis, fam in ((r.clean, None, 'clean'),
                                  (r.image, r.visibility, t)):
                buf = encode_jpeg(img, nuis.jpeg_quality)
                dec = cv2.cvtColor(cv2.imdecode(np.frombuffer(buf, np.uint8),
                                                cv2.IMREAD_COLOR),
                                   cv2.COLOR_BGR2RGB)
                mask = np.ones(img.shape[:2], np.float32) if vis is None \
                    else np.asarray(vis, np.float32)
                out.append(dict(img=dec, mask=mask, family=fam))
    return out


def occluded_train_set(data_root: str, num: int) -> List[dict]:
    """The first ``num`` images of the training occluded set with their masks."""
    root = osp.join(data_root, 'occluded')
    names = [ln.split()[0] for ln in open(osp.join(root, 'labels.txt'))][:num]
    out = []
    for n in names:
        path = next(osp.join(root, 'images', n + e)
                    for e in ('.png', '.jpg', '.jpeg', '.bmp')
                    if osp.isfile(osp.join(root, 'images', n + e)))
        img = cv2.imread(path)
        mask = cv2.imread(osp.join(root, 'masks', n + '.png'),
                          cv2.IMREAD_UNCHANGED)
        out.append(dict(img=cv2.cvtColor(img, cv2.COLOR_BGR2RGB),
                        mask=mask_to_visibility(mask), family='train_occluded'))
    return out


def paste_occluders(crops: np.ndarray, seed: int = 0) -> List[dict]:
    """Each real crop with a medical mask, and with random occluders (solid,
    texture or face-patch fills; 15-35 % of the image), with exact masks."""
    out = []
    med = MedicalMaskOcclusion(prob=1.0)
    rnd = RandomOcclusion(prob=1.0, area_range=(0.15, 0.35), max_occluders=2)
    for i, c in enumerate(crops):
        for fam, t in (('real+medical_mask', med), ('real+random', rnd)):
            np.random.seed(seed * 1000 + i)
            r = t(dict(img=c.copy()))
            out.append(dict(img=r['img'], mask=r['visibility_mask'],
                            family=fam))
    return out


# ----------------------------------------------------------------- scoring
def score(samples: List[dict], preds: Dict[str, Tuple]) -> Dict[str, dict]:
    """Per predictor and family: MAE at 7x7 and 28x28, mean predicted
    visibility, and mean predicted visibility on covered cells (true < 0.5)."""
    t7 = np.stack([visibility_to_grid(s['mask'], (7, 7)) for s in samples])
    t28 = np.stack([visibility_to_grid(s['mask'], (28, 28)) for s in samples])
    fams = np.array([s['family'] for s in samples])
    out: Dict[str, dict] = defaultdict(dict)
    for pname, (v7, v28) in preds.items():
        for fam in sorted(set(fams)) + ['all_occluded']:
            sel = fams == fam if fam != 'all_occluded' else ~np.isin(
                fams, ['clean', 'real_clean'])
            if not sel.any():
                continue
            cov = t7[sel] < 0.5
            out[pname][fam] = dict(
                n=int(sel.sum()),
                mae7=float(np.abs(v7[sel] - t7[sel]).mean()),
                mae28=float(np.abs(v28[sel] - t28[sel]).mean()),
                visible=float(v7[sel].mean()),
                covered=float(v7[sel][cov].mean()) if cov.any() else None)
    return out


def cmd_errors(args) -> None:
    torch.set_num_threads(args.threads)
    predictors: Dict[str, Predictor] = {}
    if args.head:
        predictors['head'] = head_predictor(*args.head)
    for spec in args.segmenter or []:
        name, _, path = spec.partition('=')
        predictors[name] = segmenter_predictor(path)
    sets = {
        'synthface_val': render_split(args.data, 'val', args.identities),
        'heldout': render_split(args.data, 'heldout', args.identities),
        'train_occluded': occluded_train_set(args.data, args.train_images),
    }
    crops, names, groups, how = align_photos(
        package_photos(args.extra_photos))
    real = []
    for c, g in zip(crops, groups):
        real.append(dict(img=c, mask=np.ones((112, 112), np.float32),
                         family='real_clean', group=g))
    for i, s in enumerate(paste_occluders(crops)):
        real.append(dict(s, group=groups[i // 2]))  # two per crop
    for part, keep in (('real_train', ('train', )), ('real_test', ('test', )),
                       ('real_portraits', ('portraits', )),
                       ('real_heldout', ('test', 'portraits'))):
        sel = [s for s in real if s['group'] in keep]
        if sel:
            sets[part] = sel
    result = dict(real_photos=dict(names=names, groups=groups, paths=how),
                  identities=args.identities, sets={}, real_clean_visible={})
    # Each real face's clean visible fraction (the portraits' are reported).
    for pname, pred in predictors.items():
        v7, _ = predict(pred, crops)
        result['real_clean_visible'][pname] = {
            n: float(v.mean()) for n, v in zip(names, v7)}
    for sname, samples in sets.items():
        imgs = np.stack([s['img'] for s in samples])
        preds = {}
        for pname, pred in predictors.items():
            t0 = time.time()
            preds[pname] = predict(pred, imgs)
            print(f'{sname}: {pname} {len(imgs)} images in '
                  f'{time.time() - t0:.1f} s', flush=True)
        result['sets'][sname] = score(samples, preds)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=1)
    for sname, by_pred in result['sets'].items():
        for pname, fams in by_pred.items():
            line = ', '.join(f"{k} {v['mae7']:.3f}/{v['mae28']:.3f}"
                             for k, v in fams.items())
            if sname.startswith('real'):
                line = ', '.join(
                    f"{k} visible {v['visible']:.3f}" + (
                        f" covered {v['covered']:.3f}" if v['covered']
                        is not None else '') for k, v in fams.items())
            print(f'{sname:15s} {pname:6s} {line}')


def cmd_swap(args) -> None:
    """OAML checkpoint with its neck replaced by a segmenter's weights."""
    oaml = safe_load_checkpoint(args.oaml, decode=False)
    seg = safe_load_checkpoint(args.segmenter, decode=False)
    state = {k: v for k, v in oaml['state_dict'].items()
             if not k.startswith('neck.')}
    for k, v in seg['state_dict'].items():
        if k.startswith('segmenter.'):
            state['neck.' + k[len('segmenter.'):]] = v
    # The calibration belongs to the old neck: tools/calibrate.py redoes it.
    atomic_save(dict(state_dict=state, meta={}), args.out)
    print(f'{args.out}: {len(state)} tensors')


def cmd_cost(args) -> None:
    torch.set_num_threads(1)
    x = torch.randint(0, 256, (64, 3, 112, 112), dtype=torch.uint8)
    for name, pred in (('head', head_predictor(*args.head)),
                       ('segmenter', segmenter_predictor(args.segmenter))):
        pred(x[:8])
        t0 = time.perf_counter()
        for _ in range(3):
            pred(x)
        ms = (time.perf_counter() - t0) / (3 * 64) * 1000
        print(f'{name}: {ms:.2f} ms per image (1 thread, batch 64; head: '
              'backbone + head)')


SETS = ('clean', 'masked', 'occluded', 'heldout_clean', 'heldout_masked',
        'heldout_occluded')


def cmd_table(args) -> None:
    """Markdown: the baseline's accuracy and, per model, the deciding scores
    (fused, fused_vis) minus the baseline, QAConv with predicted / true / no
    visibility and the 7x7 visibility error, from tools/test.py metrics files."""
    base = json.load(open(args.baseline))
    models = [(n, json.load(open(p))) for n, p in
              (m.partition('=')[::2] for m in args.model)]
    head = ['pairs', 'baseline']
    for n, _ in models:
        head += [f'{n} fused (Δ)', f'{n} fused_vis (Δ)',
                 f'{n} QAConv pred / true / none', f'{n} vis MAE']
    print('| ' + ' | '.join(head) + ' |')
    print('|' + '---|' * len(head))
    for k in SETS:
        b = base[f'{k}/adaface/accuracy']
        row = [k, f'{b:.1f}']
        for _, m in models:
            f, fv = m[f'{k}/fused/accuracy'], m[f'{k}/fused_vis/accuracy']
            row += [f'{f:.1f} ({f - b:+.1f})', f'{fv:.1f} ({fv - b:+.1f})',
                    ' / '.join(f"{m[f'{k}/{br}/accuracy']:.1f}" for br in (
                        'qaconv', 'qaconv_gt_vis', 'qaconv_no_vis')),
                    f"{m.get(f'{k}/visibility/MAE', float('nan')):.3f}"]
        print('| ' + ' | '.join(row) + ' |')


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = p.add_subparsers(dest='cmd', required=True)
    e = sub.add_parser('errors')
    e.add_argument('--data', default='data/synthface')
    e.add_argument('--head', nargs=2, metavar=('CONFIG', 'CKPT'))
    e.add_argument('--segmenter', action='append', metavar='NAME=CKPT')
    e.add_argument('--identities', type=int, default=40)
    e.add_argument('--train-images', type=int, default=400)
    e.add_argument('--extra-photos', metavar='DIR',
                   help="insightface's sample images (real_faces.py)")
    e.add_argument('--threads', type=int, default=1)
    e.add_argument('--out', required=True)
    s = sub.add_parser('swap')
    s.add_argument('oaml')
    s.add_argument('segmenter')
    s.add_argument('out')
    c = sub.add_parser('cost')
    c.add_argument('--head', nargs=2, required=True)
    c.add_argument('--segmenter', required=True)
    t = sub.add_parser('table')
    t.add_argument('--baseline', required=True)
    t.add_argument('--model', action='append', required=True,
                   metavar='NAME=METRICS_JSON')
    args = p.parse_args(argv)
    # A damaged checkpoint (or other bad input): one line naming the file.
    with exit_on_error():
        dict(errors=cmd_errors, swap=cmd_swap, cost=cmd_cost,
             table=cmd_table)[args.cmd](args)


if __name__ == '__main__':
    main()
