"""Occlusion report: how well a model's occlusion head and its weighting work, per type.

For a verification set whose images carry true visibility maps and occlusion types
(SynthFace's ``.bin`` files with their side files, ``VerificationBinDataset(
side_files=True)``), this evaluates the model once through
:class:`~oaml_mm.evaluation.metrics.VerificationMetric`'s visibility ablation (the
same predictions, matching and error the test metrics report) and writes one
Markdown report with its pictures from the metric's results
(``ablation_records``):

* a picture sheet per occlusion type: image | true map | predicted map (on the
  true masks' grid);
* the visibility error (mean absolute error over the cells) per type;
* the histogram of the mean predicted visibility of clean against occluded faces;
* QAConv's 10-fold verification accuracy per type with the predicted visibility,
  with the true one and without any, from the metric's pair scores
  (:func:`~oaml_mm.evaluation.functional.verification_10fold_scores`).

A pair belongs to every occlusion type of its two images (``none`` when both are
clean).
"""
import os
import os.path as osp
from collections import defaultdict
from typing import Dict, List, Optional

import cv2
import numpy as np
import torch
from mmengine.dataset import pseudo_collate
from torch.utils.data import DataLoader, Subset

from oaml_mm.errors import DataFormatError
from oaml_mm.evaluation.functional import (verification_10fold_scores,
                                           visibility_mae)

__all__ = [
    'collect_predictions', 'occlusion_tables', 'write_occlusion_report',
    'stratified_pairs'
]


def stratified_pairs(dataset, max_images: int) -> List[int]:
    """Image indices of whole pairs drawn from every group the report shows.

    Pairs are grouped by set and by the occlusion types of their two images
    (as :func:`occlusion_tables` groups them); the groups take turns, one pair
    each, until ``max_images`` images are chosen, and each group's pairs are
    spread evenly over it. The first N images of a SynthFace set are all
    clean pairs; this sample reports on every type.

    Args:
        dataset: As for :func:`collect_predictions`; only its
            ``get_data_info`` is read (no image is decoded).
        max_images (int): Images to keep (rounded down to whole pairs).

    Returns:
        list[int]: Sorted indices, both images of each chosen pair.
    """
    pairs: Dict[tuple, Dict[int, int]] = defaultdict(dict)
    types: Dict[tuple, set] = defaultdict(set)
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        key = (str(info.get('dataset_name', '')), int(info['pair_index']))
        pairs[key][int(info['pair_slot'])] = i
        types[key].add(str(info.get('occlusion_type', 'none')))
    groups: Dict[tuple, list] = defaultdict(list)
    for key, slots in pairs.items():
        if len(slots) == 2:
            kinds = tuple(sorted(types[key] - {'none'})) or ('none', )
            groups[(key[0], kinds)].append(key)
    budget = max_images // 2
    take = {g: 0 for g in groups}
    while budget > 0 and any(take[g] < len(v) for g, v in groups.items()):
        for g in sorted(groups):
            if budget > 0 and take[g] < len(groups[g]):
                take[g] += 1
                budget -= 1
    chosen = []
    for g, members in groups.items():
        if take[g]:
            at = np.linspace(0, len(members) - 1, take[g]).round().astype(int)
            for j in np.unique(at):
                chosen.extend(pairs[members[j]].values())
    return sorted(chosen)


@torch.no_grad()
def collect_predictions(model, dataset, batch_size: int = 64,
                        max_images: Optional[int] = None,
                        per_type: int = 6) -> Dict[str, object]:
    """Evaluate ``model`` on ``dataset`` through the metric's visibility ablation.

    One :class:`~oaml_mm.evaluation.metrics.VerificationMetric` per set
    (``dataset_name``) with ``visibility_ablation=True`` scores the images; the
    report takes its ``ablation_records``, so its numbers are the metric's.

    Args:
        model: An ``OAMLRecognizer`` with a QAConv head (eval mode is set here).
        dataset: Samples with ``gt_visibility``, ``occlusion_type``, ``pair_index``,
            ``pair_slot``, ``issame`` and ``dataset_name`` (``VerificationBinDataset``
            with ``side_files=True``, alone or in a ``ConcatDataset``).
        batch_size (int): Images per forward. Defaults to 64.
        max_images (int, optional): Only ``max_images`` images: whole pairs
            from every set and occlusion type in turn
            (:func:`stratified_pairs`).
        per_type (int): Images of each type kept for the picture sheets.

    Returns:
        dict: ``pred`` / ``true`` float32 [N, h, w] (the predicted map on the
        true masks' grid), ``types`` and ``pairs`` (``(set, index, slot,
        issame)``) per image, ``pair_rows`` [P, 2] (the images of each pair),
        ``issame`` [P], ``scores`` (``qaconv``, ``qaconv_gt_vis``,
        ``qaconv_no_vis``: [P] each), ``images`` (image row -> uint8
        [H, W, 3] RGB, ``per_type`` of each type) and ``metrics`` (the
        metric's keys).

    Raises:
        DataFormatError: A sample carries no ``gt_visibility`` or
            ``occlusion_type``, or a set has fewer than 2 pairs.
    """
    from oaml_mm.evaluation.metrics import VerificationMetric
    model.eval()
    index = range(len(dataset)) if max_images is None or \
        max_images >= len(dataset) else stratified_pairs(dataset, max_images)
    loader = DataLoader(Subset(dataset, index), batch_size=batch_size,
                        shuffle=False, collate_fn=pseudo_collate)
    metrics: Dict[str, VerificationMetric] = {}
    dense: Dict[tuple, int] = {}  # (set, pair_index) -> pair of the metric
    kept: Dict[str, list] = defaultdict(list)  # type -> [(set, row, image)]
    wanted = model.test_cfg['return_feature_maps']
    model.test_cfg['return_feature_maps'] = True
    try:
        for data in loader:
            for s in data['data_samples']:
                if 'gt_visibility' not in s or 'occlusion_type' not in s:
                    raise DataFormatError(
                        str(s.get('img_path', '<dataset>')),
                        'the occlusion report needs true visibility and '
                        'occlusion types (VerificationBinDataset '
                        'side_files=True)', record=s.get('key'),
                        field='gt_visibility')
            # PackFaceInputs keeps the decoded RGB order.
            images = [x.permute(1, 2, 0).numpy() for x in data['inputs']]
            by_set = defaultdict(list)
            for s, img in zip(model.test_step(data), images):
                name = str(s.get('dataset_name', ''))
                # A sample of pairs is numbered densely: the metric wants
                # every pair from 0 up.
                key = (name, int(s.pair_index))
                if key not in dense:
                    dense[key] = sum(k[0] == name for k in dense)
                s.set_metainfo(dict(pair_index=dense[key]))
                by_set[name].append(s)
                t = str(s.occlusion_type)
                if len(kept[t]) < per_type:
                    kept[t].append((name, 2 * dense[key] + int(s.pair_slot),
                                    img.astype(np.uint8)))
            for name, samples in by_set.items():
                if name not in metrics:
                    metrics[name] = VerificationMetric(
                        name or 'set', progress=False,
                        visibility_ablation=True)
                    metrics[name].bind_model(model)
                metrics[name].process(data, samples)
    finally:
        model.test_cfg['return_feature_maps'] = wanted
    out = defaultdict(list)
    scores = defaultdict(list)
    offset, at = 0, {}
    results = {}
    for name in sorted(metrics):
        m = metrics[name]
        pairs = sum(k[0] == name for k in dense)
        if pairs < 2:
            raise DataFormatError(name or '<dataset>', f'{pairs} pair(s): the '
                                  'report needs at least 2 per set')
        m.nrof_folds = min(10, pairs)
        try:
            results.update(m.evaluate(2 * pairs))
        except ValueError as e:  # e.g. only genuine pairs in a small sample
            raise DataFormatError(name or '<dataset>', f'the metric cannot '
                                  f'score these {pairs} pairs: {e}') from e
        r = m.ablation_records
        at[name] = offset
        out['pred'].append(r['pred'])
        out['true'].append(r['true'])
        out['types'].extend(r['types'])
        out['issame'].append(r['issame'])
        out['pairs'].extend((name, j // 2, j % 2, bool(r['issame'][j // 2]))
                            for j in range(len(r['types'])))
        out['pair_rows'].append(offset + np.arange(2 * pairs).reshape(-1, 2))
        for k, v in r['scores'].items():
            scores[k].append(v)
        offset += 2 * pairs
    return dict(pred=np.concatenate(out['pred']),
                true=np.concatenate(out['true']), types=out['types'],
                pairs=out['pairs'], pair_rows=np.concatenate(out['pair_rows']),
                issame=np.concatenate(out['issame']),
                scores={k: np.concatenate(v) for k, v in scores.items()},
                images={at[n] + row: img for per in kept.values()
                        for n, row, img in per},
                metrics=results)


def occlusion_tables(rec: Dict[str, object],
                     bins: int = 10) -> Dict[str, object]:
    """Per-type error, clean / occluded histograms and QAConv accuracy per type.

    Args:
        rec (dict): What :func:`collect_predictions` returned (the metric's
            ablation records).
        bins (int): Histogram bins over [0, 1].

    Returns:
        dict: ``mae`` (type -> MAE), ``hist`` (``edges``, ``clean``, ``occluded``
        counts of mean predicted visibility), ``qaconv`` (type -> ``(pairs,
        accuracy with predicted visibility, without any, with the true one)``,
        accuracies in percent or NaN below 10 pairs).
    """
    types = rec['types']
    mae = visibility_mae(rec['pred'], rec['true'], types)
    mean_vis = rec['pred'].reshape(len(types), -1).mean(1)
    clean = np.asarray([t == 'none' for t in types])
    edges = np.linspace(0, 1, bins + 1)
    hist = dict(edges=edges,
                clean=np.histogram(mean_vis[clean], edges)[0],
                occluded=np.histogram(mean_vis[~clean], edges)[0])
    same = np.asarray(rec['issame'], bool)
    groups = defaultdict(list)
    for j, (ia, ib) in enumerate(rec['pair_rows']):
        kinds = {types[ia], types[ib]} - {'none'} or {'none'}
        for t in kinds:
            groups[t].append(j)
        groups['all'].append(j)
    nan = np.full(len(same), np.nan)
    sc = rec['scores']

    def acc(scores, idx):
        if len(idx) < 10 or same[idx].all() or not same[idx].any() or \
                np.isnan(scores[idx]).any():
            return float('nan')
        return 100.0 * verification_10fold_scores(scores[idx], same[idx])[
            'accuracy']

    qaconv = {t: (len(idx), acc(sc.get('qaconv', nan), np.asarray(idx)),
                  acc(sc.get('qaconv_no_vis', nan), np.asarray(idx)),
                  acc(sc.get('qaconv_gt_vis', nan), np.asarray(idx)))
              for t, idx in sorted(groups.items())}
    return dict(mae=mae, hist=hist, qaconv=qaconv)


def _heat(vis: np.ndarray, size: int) -> np.ndarray:
    v = np.clip(vis, 0, 1)
    big = cv2.resize((v * 255).astype(np.uint8), (size, size),
                     interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(cv2.applyColorMap(big, cv2.COLORMAP_VIRIDIS),
                        cv2.COLOR_BGR2RGB)


def _sheet(rec, idx: List[int], size: int = 112) -> np.ndarray:
    rows = []
    for i in idx:
        img = cv2.resize(rec['images'][i], (size, size))
        rows.append(np.concatenate([img, _heat(rec['true'][i], size),
                                    _heat(rec['pred'][i], size)], axis=1))
    return np.concatenate(rows, axis=0)


def _fmt(x: float) -> str:
    return 'n/a' if x != x else f'{x:.1f}'


def write_occlusion_report(out_dir: str, rec: Dict[str, object],
                           tables: Dict[str, object], per_type: int = 6,
                           title: str = 'Occlusion report') -> str:
    """Write ``report.md``, ``sheet_<type>.png`` and ``visibility_hist.png``.

    Returns:
        str: The path of ``report.md``.
    """
    os.makedirs(out_dir, exist_ok=True)
    types = rec['types']
    lines = [f'# {title}', '', f'{len(types)} images.', '',
             '## Visibility error per occlusion type', '',
             '| type | images | MAE |', '|---|---|---|']
    counts = {t: types.count(t) for t in set(types)}
    for t, v in tables['mae'].items():
        lines.append(f"| {t} | {counts.get(t, len(types))} | {v:.3f} |")
    lines += ['', '## QAConv accuracy per type (10-fold, %)', '',
              '| pairs of type | pairs | with predicted visibility | '
              'without weighting | with true visibility |',
              '|---|---|---|---|---|']
    for t, (n, w, p, g) in tables['qaconv'].items():
        lines.append(f'| {t} | {n} | {_fmt(w)} | {_fmt(p)} | {_fmt(g)} |')
    h = tables['hist']
    lines += ['', '## Mean predicted visibility: clean against occluded faces', '',
              '![histogram](visibility_hist.png)', '',
              '| bin | clean | occluded |', '|---|---|---|']
    for k in range(len(h['clean'])):
        lines.append(f"| {h['edges'][k]:.1f}-{h['edges'][k + 1]:.1f} | "
                     f"{int(h['clean'][k])} | {int(h['occluded'][k])} |")
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3))
    centres = (h['edges'][:-1] + h['edges'][1:]) / 2
    width = (h['edges'][1] - h['edges'][0]) * 0.4
    ax.bar(centres - width / 2, h['clean'], width, label='clean')
    ax.bar(centres + width / 2, h['occluded'], width, label='occluded')
    ax.set_xlabel('mean predicted visibility')
    ax.set_ylabel('images')
    ax.legend()
    fig.tight_layout()
    fig.savefig(osp.join(out_dir, 'visibility_hist.png'), dpi=100)
    plt.close(fig)
    lines += ['', '## Picture sheets (image | true map | predicted map)', '']
    for t in sorted(counts):
        idx = [i for i, x in enumerate(types)
               if x == t and i in rec['images']][:per_type]
        name = f'sheet_{t}.png'
        cv2.imwrite(osp.join(out_dir, name),
                    cv2.cvtColor(_sheet(rec, idx), cv2.COLOR_RGB2BGR))
        lines += [f'### {t}', '', f'![{t}]({name})', '']
    path = osp.join(out_dir, 'report.md')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path
