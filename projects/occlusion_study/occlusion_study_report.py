"""Tables of the occlusion study (``projects/occlusion_study/occlusion_study.py``).

Reads ``WORK/it{iters}/seed{seed}/{model}/test_{bins,ijbc}.json`` (``tools/test.py
--out``) and writes, per budget, the score of every model on every pair group
(mean ± s.d. over seeds) and the aims of the study: what OAML earns over the fair
baseline, the no-awareness control and the seed-style baseline, on the training
occluders and on the held-out occluders and faces.

Each model is judged by its own final score: AdaFace models by the cosine branch,
OAML models by the fused score; an OAML model whose checkpoint carries fitted
visibility-aware fusion also gets a ``+vis-fusion`` column (``fused_vis``). The aims
compare an OAML score with the AdaFace models' cosine and with the control's same
score (fused with fused, fused_vis with fused_vis).

Examples:
    python -m projects.occlusion_study.occlusion_study_report \\
        work_dirs/occlusion_study \\
        --models adaface adaface_cleanonly oaml oaml_novis --iters 500 --seeds 0 1
    # what OAML with a segmenter earns over the baseline and its control
    python -m projects.occlusion_study.occlusion_study_report \\
        work_dirs/occlusion_study --predictor oaml_seg --iters 500 1500
"""
import argparse
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from projects.occlusion_study import synthface_report as report
from projects.occlusion_study import synthface_runs as runs

#: (metric prefix, row label, group) of every row; groups feed the aims.
ROWS = (
    ('clean', 'SynthFace clean–clean', 'clean'),
    ('masked', 'SynthFace clean–occluded', 'occluded'),
    ('occluded', 'SynthFace occluded–occluded', 'occluded'),
    ('heldout_clean', 'held-out clean–clean', 'heldout_clean'),
    ('heldout_masked', 'held-out clean–occluded', 'heldout_occluded'),
    ('heldout_occluded', 'held-out occluded–occluded', 'heldout_occluded'),
)
IJBC_FAR = '1e-03'
#: The aims of the study (points of 10-fold accuracy): group, reference model,
#: least lead.
AIMS = (
    ('heldout_occluded', 'adaface', 5.0),
    ('heldout_occluded', 'oaml_novis', 3.0),
    ('occluded', 'adaface', 6.0),
    ('occluded', 'adaface_cleanonly', 15.0),
    ('clean', 'adaface', -1.0),
    ('heldout_clean', 'adaface', -1.0),
)
#: The no-awareness control of each OAML model: the same loss split with every use of
#: visibility off, so that "model - control" is what awareness earns. Models with no
#: control at their split are not compared with one (n/a).
CONTROL = {
    'oaml': 'oaml_novis',
    'oaml_visemb': 'oaml_novis',
    'oaml_randocc': 'oaml_novis',
    'oaml_randocc_visemb': 'oaml_novis',
    'oaml_ada05': 'oaml_novis_ada05',
    'oaml_seg': 'oaml_novis',
    'oaml_seg_sched': 'oaml_novis',
    'oaml_seg_qpred': 'oaml_novis',
    'oaml_seg_qnone': 'oaml_novis',
}
NAMES = {
    'adaface': 'fair AdaFace baseline',
    'adaface_cleanonly': 'seed-style AdaFace (clean data)',
    'oaml_novis': 'no-awareness control',
    'oaml_ada03': 'oaml AdaFace 0.3',
    'oaml_ada05': 'oaml AdaFace 0.5',
    'oaml_novis_ada05': 'no-awareness control AdaFace 0.5',
    'oaml_ada03_visemb': 'oaml AdaFace 0.3 visemb',
    'oaml_seg': 'oaml segmenter',
    'oaml_seg_sched': 'oaml segmenter, split schedule',
    'oaml_seg_qpred': 'oaml segmenter, QAConv trained on its prediction',
    'oaml_seg_qnone': 'oaml segmenter, QAConv trained without visibility',
}


def load_runs(work_dir: str, model: str, iters: int,
              seeds: Sequence[int]) -> List[Optional[Dict[str, float]]]:
    """Merged metrics of each seed's run (None where it is missing)."""
    out = []
    for seed in seeds:
        wd = osp.join(work_dir, f'it{iters}', f'seed{seed}', model)
        files = [osp.join(wd, f'test_{p}.json') for p in ('bins', 'ijbc')]
        missing = [f for f in files if not osp.isfile(f)]
        if missing:
            # A table cell then stands on fewer seeds than its heading says.
            print(f'[report] missing: {", ".join(missing)}', file=sys.stderr)
        merged: Optional[Dict[str, float]] = None
        branch = runs.MAIN_BRANCH[runs.FAMILY[model]]
        for f in files:
            if f in missing:
                continue
            try:
                part = report.merge_files([f])
            except (ValueError, TypeError) as e:
                part = e
            if (not isinstance(part, dict) or not part or not all(
                    isinstance(v, (int, float)) for v in part.values())):
                raise SystemExit(f'{f}: not a tools/test.py --out metrics file '
                                 f'(interrupted test?): {str(part)[:200]}')
            # A file of another model family (copied or overwritten) would
            # silently drop this seed from every lead.
            if (runs.FAMILY[model] == 'adaface'
                    and any('/qaconv/' in k for k in part)):
                raise SystemExit(f'{f}: holds QAConv scores, so it is an OAML '
                                 f"model's metrics file, not {model}'s")
            if not any(f'/{branch}/' in k or f'/{branch}_vispool/' in k
                       for k in part):
                raise SystemExit(f'{f}: no {branch!r} scores; {model} is judged by '
                                 f'them (is this another model\'s metrics file?)')
            merged = {**(merged or {}), **part}
        out.append(merged)
    return out


def scorers(model: str, metrics: List[Optional[Dict[str, float]]]) -> List[str]:
    """The branches a model is judged by: its main one, plus ``fused_vis``."""
    main = runs.MAIN_BRANCH[runs.FAMILY[model]]
    found = [m for m in metrics if m]
    extra = ['fused_vis'] if any('clean/fused_vis/accuracy' in m
                                 for m in found) else []
    return [main] + extra


def _value(m: Optional[Dict[str, float]], key: str) -> Optional[float]:
    return None if m is None else m.get(key)


def _group_mean(m: Optional[Dict[str, float]], branch: str,
                group: str) -> Optional[float]:
    vals = [_value(m, f'{p}/{branch}/accuracy') for p, _, g in ROWS
            if g == group]
    if not vals or any(v is None for v in vals):
        return None
    return sum(vals) / len(vals)


def study_table(work_dir: str, models: Sequence[str], iters: Sequence[int],
                seeds: Sequence[int]) -> str:
    """Markdown: per budget, the scores table and the aims table."""
    out = []
    for it in iters:
        data = {m: load_runs(work_dir, m, it, seeds) for m in models}
        cols: List[Tuple[str, str]] = [(m, b) for m in models
                                       for b in scorers(m, data[m])]
        n = len(seeds)
        out += [f'### {it} iterations, seeds {list(seeds)}'
                f'{" (mean ± s.d.)" if n > 1 else ""}', '',
                '**10-fold verification accuracy (%); mini IJB-C TAR@FAR='
                f'{IJBC_FAR} (%)**', '',
                '| pairs | ' + ' | '.join(_col_name(m, b) for m, b in cols) +
                ' |', '|---' * (len(cols) + 1) + '|']
        for prefix, label, _ in ROWS:
            out.append(f'| {label} | ' + ' | '.join(
                report._stat([_value(r, f'{prefix}/{b}/accuracy')
                              for r in data[m]]) for m, b in cols) + ' |')
        for suffix, label in (('', 'mini IJB-C'),
                              ('_vispool', 'mini IJB-C, visibility-weighted '
                               'templates')):
            out.append(f'| {label} | ' + ' | '.join(
                report._stat([_value(r, f'ijbc/{b}{suffix}/TAR@FAR={IJBC_FAR}')
                              for r in data[m]]) for m, b in cols) + ' |')
        out += [''] + _aims_table(data, cols) + ['']
        out += _mae_table(data) + ['']
    return '\n'.join(out)


#: Occluder families and the set whose images carry them: the training families
#: on SynthFace's occluded pairs, the held-out ones on the held-out pairs (the
#: generator's lists; a type the data names beyond them gets a column too).
MAE_COLUMNS = (('occluded', report.OCC_TYPES),
               ('heldout_occluded', report.HELDOUT_OCC_TYPES))


def _mae_table(data: Dict[str, list]) -> List[str]:
    """The occlusion head's visibility error per family, for each OAML model."""
    every = [r for runs_ in data.values() for r in runs_]
    cols = [(s, t) for s, types in MAE_COLUMNS
            for t in report.occlusion_types(every, s, types)]
    rows = []
    for m, runs_ in data.items():
        if not any(r and 'occluded/visibility/MAE' in r for r in runs_):
            continue
        cells = [report._stat([_value(r, f'{s}/visibility/MAE_{t}')
                               for r in runs_], digits=3) for s, t in cols]
        for s in ('occluded', 'heldout_occluded'):
            cells.append(report._stat([_value(r, f'{s}/visibility/MAE')
                                       for r in runs_], digits=3))
        cells.append(report._stat([_value(r, 'clean/visibility/MAE')
                                   for r in runs_], digits=3))
        rows.append(f'| {_col_name(m, "")} | ' + ' | '.join(cells) + ' |')
    if not rows:
        return []
    head = [t.replace('_', ' ') for _, t in cols] + [
        'all training families', 'all held-out families', 'clean faces']
    return ['**Occlusion head: mean absolute error of the 7×7 visibility map per '
            'occluder family (training families | held-out families)**', '',
            '| model | ' + ' | '.join(head) + ' |',
            '|---' * (len(head) + 1) + '|'] + rows


def _col_name(model: str, branch: str) -> str:
    name = NAMES.get(model, model.replace('_', ' '))
    return name + (' +vis-fusion' if branch == 'fused_vis' else '')


def _aims_table(data: Dict[str, list], cols: List[Tuple[str, str]]) -> List[str]:
    # Controls are rows too: "control - baseline" is what the QAConv loss and P x K
    # batches earn without awareness.
    oaml = [(m, b) for m, b in cols if runs.FAMILY[m] == 'oaml']
    controls = set(CONTROL.values())
    aims = [a for a in AIMS if a[1] in data
            or (a[1] == 'oaml_novis' and controls & set(data))]
    if not oaml or not aims:
        return []
    own_control = 'its no-awareness control (same loss split)'
    head = [f'{g.replace("_", " ")} vs '
            f'{own_control if ref == "oaml_novis" else NAMES.get(ref, ref)}'
            f' (aim ≥ {lead:+g})'
            for g, ref, lead in aims]
    lines = ['**Lead of each OAML model (points, mean over seeds of the '
             'group mean); ✓ = aim met**', '',
             '| model | ' + ' | '.join(head) + ' |',
             '|---' * (len(head) + 1) + '|']
    for m, b in oaml:
        cells = []
        for group, ref, lead in aims:
            if ref == 'oaml_novis':
                ref = CONTROL.get(m)
                if ref not in data:
                    cells.append('n/a')
                    continue
            # Like with like: an OAML-family reference (the control) is judged by
            # the same score (its fused_vis fusion sees a constant visibility).
            ref_b = b if runs.FAMILY[ref] == 'oaml' else \
                runs.MAIN_BRANCH[runs.FAMILY[ref]]
            diffs = []
            for r, rr in zip(data[m], data[ref]):
                a, c = _group_mean(r, b, group), _group_mean(rr, ref_b, group)
                if a is not None and c is not None:
                    diffs.append(a - c)
            if not diffs:
                cells.append('n/a')
                continue
            d = sum(diffs) / len(diffs)
            # Mark a lead that stands on fewer seeds than the heading says.
            few = (f' ({len(diffs)} of {len(data[m])} seeds)'
                   if len(diffs) < len(data[m]) else '')
            cells.append(f'{d:+.1f} {"✓" if d >= lead else "✗"}{few}')
        lines.append(f'| {_col_name(m, b)} | ' + ' | '.join(cells) + ' |')
    return lines


def _paired(a: List[Optional[Dict[str, float]]], ka: str,
            b: List[Optional[Dict[str, float]]], kb: str) -> List[Optional[float]]:
    """Per-seed differences ``a[ka] - b[kb]`` (None where either is missing)."""
    out = []
    for ra, rb in zip(a, b):
        va, vb = _value(ra, ka), _value(rb, kb)
        out.append(None if va is None or vb is None else va - vb)
    return out


def _lead(values: List[Optional[float]]) -> str:
    """Mean ± s.d. of differences, signed (``+2.5 ± 0.7``)."""
    text = report._stat(values)
    return text if text == 'n/a' or text.startswith('-') else '+' + text


def predictor_table(work_dir: str, model: str, iters: int,
                    seeds: Sequence[int], baseline: str = 'adaface',
                    reference: Optional[str] = 'oaml') -> str:
    """Markdown: what one OAML model's visibility predictor buys, per pair group.

    Every cell is the mean ± s.d. over ``seeds``; differences are taken within a
    seed (the model's run against the baseline's and the control's of the same
    seed) before they are averaged. Columns: the fair baseline's cosine, the
    control's ``fused_vis``, the reference OAML model's ``fused_vis`` (where its
    runs exist), the model's ``fused`` and ``fused_vis``, ``fused_vis`` minus the
    baseline and minus the control, QAConv with the predicted / true / no
    visibility (``visibility_ablation``), predicted minus true and minus none,
    and the 7×7 visibility map's mean absolute error.

    Args:
        work_dir (str): The study folder (``it{iters}/seed{seed}/{model}/``).
        model (str): An OAML model of :data:`synthface_runs.CONFIGS` with a
            control in :data:`CONTROL`.
        iters (int): The budget.
        seeds (Sequence[int]): The seeds averaged over.
        baseline (str): The AdaFace model the lead is measured against.
        reference (str, optional): Another OAML model shown beside (its
            ``fused_vis``); None or no runs: no column.

    Returns:
        str: The table (missing runs give ``n/a`` cells).

    Raises:
        ValueError: ``model`` is not an OAML model with a control.
    """
    if runs.FAMILY.get(model) != 'oaml' or model not in CONTROL:
        raise ValueError(f'{model!r}: not an OAML model with a no-awareness '
                         f'control (one of {sorted(CONTROL)})')
    control = CONTROL[model]
    m = load_runs(work_dir, model, iters, seeds)
    base = load_runs(work_dir, baseline, iters, seeds)
    ctrl = load_runs(work_dir, control, iters, seeds)
    ref = (load_runs(work_dir, reference, iters, seeds)
           if reference and reference != model else [])
    if not any(ref):
        ref = []
    name = NAMES.get(model, model)
    head = ['pairs', f'{NAMES[baseline]} (cosine)', 'control fused_vis'] + (
        [f'{NAMES.get(reference, reference)} fused_vis'] if ref else []) + [
        f'{name} fused', f'{name} fused_vis', 'fused_vis − baseline',
        'fused_vis − control', 'QAConv predicted', 'QAConv true',
        'QAConv none', 'predicted − true', 'predicted − none', 'vis MAE']
    lines = [f'**{name}, {iters} iterations, seeds {list(seeds)} (mean ± s.d.; '
             'differences within a seed)**', '',
             '| ' + ' | '.join(head) + ' |', '|---' * len(head) + '|']
    bkey = runs.MAIN_BRANCH[runs.FAMILY[baseline]]
    for prefix, label, _ in ROWS:
        def k(branch):
            return f'{prefix}/{branch}/accuracy'

        cells = [report._stat([_value(r, k(bkey)) for r in base]),
                 report._stat([_value(r, k('fused_vis')) for r in ctrl])]
        if ref:
            cells.append(report._stat([_value(r, k('fused_vis')) for r in ref]))
        cells += [report._stat([_value(r, k(b)) for r in m])
                  for b in ('fused', 'fused_vis')]
        cells += [_lead(_paired(m, k('fused_vis'), base, k(bkey))),
                  _lead(_paired(m, k('fused_vis'), ctrl, k('fused_vis')))]
        cells += [report._stat([_value(r, k(b)) for r in m])
                  for b in ('qaconv', 'qaconv_gt_vis', 'qaconv_no_vis')]
        cells += [_lead(_paired(m, k('qaconv'), m, k(b)))
                  for b in ('qaconv_gt_vis', 'qaconv_no_vis')]
        cells.append(report._stat(
            [_value(r, f'{prefix}/visibility/MAE') for r in m], digits=3))
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


#: Columns of the README table: (model, branch, label).
HEADLINE = (('adaface_cleanonly', 'adaface', 'seed-style AdaFace'),
            ('adaface', 'adaface', 'fair AdaFace'),
            ('oaml_novis', 'fused_vis', 'control'),
            ('oaml', 'fused_vis', 'OAML'))


def headline_table(work_dir: str, iters: Sequence[int],
                   seeds: Sequence[int]) -> str:
    """The README's table: the four headline models at every budget."""
    cols = [(it, m, b, label) for it in iters for m, b, label in HEADLINE]
    data = {(it, m): load_runs(work_dir, m, it, seeds) for it, m, _, _ in cols}
    names = [f'{label}, {it} it' for it, _, _, label in cols]
    lines = ['| pairs | ' + ' | '.join(names) + ' |',
             '|---' * (len(cols) + 1) + '|']
    for prefix, label, _ in ROWS:
        cells = [report._stat([_value(r, f'{prefix}/{b}/accuracy')
                               for r in data[(it, m)]])
                 for it, m, b, _ in cols]
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('work_dir')
    p.add_argument('--models', nargs='+', default=list(runs.CONFIGS),
                   choices=sorted(runs.CONFIGS))
    p.add_argument('--iters', type=int, nargs='+', default=[500, 1500])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    p.add_argument('--headline', action='store_true',
                   help="print the README's four-model table instead")
    p.add_argument('--predictor', default=None, choices=sorted(CONTROL),
                   help='print, per budget, what this OAML model earns over the '
                   'baseline and its control, with QAConv under predicted / true / '
                   'no visibility and the visibility error, instead')
    args = p.parse_args(argv)
    if not osp.isdir(args.work_dir):
        raise SystemExit(f'{args.work_dir}: no such study folder')
    if args.headline:
        print(headline_table(args.work_dir, args.iters, args.seeds))
        return
    if args.predictor:
        print('\n\n'.join(
            predictor_table(args.work_dir, args.predictor, it, args.seeds)
            for it in args.iters))
        return
    # A model named twice is one column.
    print(study_table(args.work_dir, list(dict.fromkeys(args.models)),
                      args.iters, args.seeds))


if __name__ == '__main__':
    main()
