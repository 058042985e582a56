"""The SynthFace comparison table: baseline vs OAML, ablation and visibility error.

Input: the ``tools/test.py --out`` JSON files of the two demo models (``.bin`` sets
and mini IJB-C), one pair per seed. Output: one Markdown table (printed by the demo,
pasted into the README) with the mean over seeds and, for several seeds, the sample
standard deviation.

Examples:
    python -m projects.occlusion_study.synthface_report \
        --adaface work_dirs/synthface_demo/seed0/adaface_*.json \
        --oaml work_dirs/synthface_demo/seed0/oaml_*.json
"""
import argparse
import json
import math
from typing import Dict, List, Optional, Sequence

from oaml_mm.synthface import HELDOUT_OCCLUSION_TYPES, OCCLUSION_TYPES

SETS = (('clean', 'clean-clean'), ('masked', 'clean-masked'),
        ('occluded', 'occluded-occluded'))
# Held-out sets (docs/synthface.md, "Held-out occluders and faces"): style-B faces,
# occluder families training never sees.
HELDOUT_SETS = (('heldout_clean', 'held-out clean-clean'),
                ('heldout_masked', 'held-out clean-heldout-occluded'),
                ('heldout_occluded', 'held-out occluded-occluded'))
IJBC_FARS = ('1e-03', '1e-02', '1e-01')
#: Column order of the per-type error tables: the generator's own lists (one
#: home, ``oaml_mm.synthface``); types the data names beyond them follow
#: (:func:`occlusion_types`).
OCC_TYPES = tuple(OCCLUSION_TYPES[1:])
HELDOUT_OCC_TYPES = tuple(HELDOUT_OCCLUSION_TYPES)


def occlusion_types(runs: Sequence[Optional[Dict[str, float]]], set_name: str,
                    order: Sequence[str] = ()) -> List[str]:
    """The occluder types of ``set_name`` the metrics report an error for.

    The metric names a ``{set}/visibility/MAE_{type}`` key after each type the
    data's side files (``<set>.types.txt``) name, so a new type appears here
    without a code edit.

    Args:
        runs (Sequence[dict]): Merged metrics per run (None entries skipped).
        set_name (str): Key prefix of the set, e.g. ``'occluded'``.
        order (Sequence[str]): Known types, first and in this order (a
            missing one's cells then say ``n/a``); the others follow sorted.

    Returns:
        list[str]: Types other than ``'none'``.
    """
    prefix = f'{set_name}/visibility/MAE_'
    seen = {k[len(prefix):] for r in runs if r for k in r
            if k.startswith(prefix)} - {'none'}
    return list(order) + sorted(seen - set(order))


def _stat(values: Sequence[Optional[float]], digits: int = 1) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return 'n/a'
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return f'{mean:.{digits}f}'
    sd = math.sqrt(sum((v - mean)**2 for v in vals) / (len(vals) - 1))
    return f'{mean:.{digits}f} ± {sd:.{digits}f}'


def _get(runs: List[Dict[str, float]], key: str) -> List[Optional[float]]:
    return [r.get(key) for r in runs]


def _diff(a: List[Dict[str, float]], ka: str, b: List[Dict[str, float]],
          kb: str) -> List[Optional[float]]:
    out = []
    for ra, rb in zip(a, b):
        va, vb = ra.get(ka), rb.get(kb)
        out.append(None if va is None or vb is None else va - vb)
    return out


def comparison_table(adaface: List[Dict[str, float]],
                     oaml: List[Dict[str, float]]) -> str:
    """Markdown tables of the demo: accuracy per branch, IJB-C, ablation, MAE.

    Args:
        adaface (list[dict]): Per seed, the baseline's merged metrics.
        oaml (list[dict]): Per seed, OAML's merged metrics (same seed order).

    Returns:
        str: Markdown (four tables). The held-out rows and MAE table read
        ``n/a`` where the held-out sets were not evaluated.
    """
    n = len(oaml)
    head = ('10-fold verification accuracy (%)' +
            (f', mean ± s.d. over {n} seeds' if n > 1 else ''))
    lines = [
        f'**{head}**', '',
        '| pairs | AdaFace baseline | OAML adaface | OAML qaconv | '
        'OAML fused | fused − baseline |',
        '|---|---|---|---|---|---|',
    ]
    for key, label in SETS + HELDOUT_SETS:
        lines.append(
            f'| {label} | ' + ' | '.join([
                _stat(_get(adaface, f'{key}/adaface/accuracy')),
                _stat(_get(oaml, f'{key}/adaface/accuracy')),
                _stat(_get(oaml, f'{key}/qaconv/accuracy')),
                _stat(_get(oaml, f'{key}/fused/accuracy')),
                _stat(_diff(oaml, f'{key}/fused/accuracy', adaface,
                            f'{key}/adaface/accuracy')),
            ]) + ' |')
    for far in IJBC_FARS:
        k = f'TAR@FAR={far}'
        lines.append(
            f'| mini IJB-C {k} | ' + ' | '.join([
                _stat(_get(adaface, f'ijbc/adaface/{k}')),
                _stat(_get(oaml, f'ijbc/adaface/{k}')),
                _stat(_get(oaml, f'ijbc/qaconv/{k}')),
                _stat(_get(oaml, f'ijbc/fused/{k}')),
                _stat(_diff(oaml, f'ijbc/fused/{k}', adaface,
                            f'ijbc/adaface/{k}')),
            ]) + ' |')
    lines += [
        '', '**Ablation: OAML QAConv accuracy (%) with predicted, true and no '
        'visibility**', '',
        '| pairs | predicted | true masks | none | predicted − none |',
        '|---|---|---|---|---|',
    ]
    for key, label in SETS + HELDOUT_SETS:
        lines.append(
            f'| {label} | ' + ' | '.join([
                _stat(_get(oaml, f'{key}/qaconv/accuracy')),
                _stat(_get(oaml, f'{key}/qaconv_gt_vis/accuracy')),
                _stat(_get(oaml, f'{key}/qaconv_no_vis/accuracy')),
                _stat(_diff(oaml, f'{key}/qaconv/accuracy', oaml,
                            f'{key}/qaconv_no_vis/accuracy')),
            ]) + ' |')
    occ_types = occlusion_types(oaml, 'occluded', OCC_TYPES)
    heldout_types = occlusion_types(oaml, 'heldout_occluded', HELDOUT_OCC_TYPES)
    lines += [
        '', '**Occlusion head: mean absolute error of the 7×7 visibility map '
        '(occluded-occluded set per type; clean faces from the clean set)**',
        '',
        '| ' + ' | '.join(occ_types) + ' | all occluded | clean |',
        '|' + '---|' * (len(occ_types) + 2),
        '| ' + ' | '.join(
            _stat(_get(oaml, f'occluded/visibility/MAE_{t}'), 3)
            for t in occ_types) + ' | ' +
        _stat(_get(oaml, 'occluded/visibility/MAE'), 3) + ' | ' +
        _stat(_get(oaml, 'clean/visibility/MAE'), 3) + ' |',
        '', '**Occlusion head on held-out occluders and style-B faces: mean '
        'absolute error of the 7×7 visibility map (held-out occluded-occluded set '
        'per family; clean faces from the held-out clean set)**', '',
        '| ' + ' | '.join(heldout_types) + ' | all held-out occluded | '
        'held-out clean |',
        '|' + '---|' * (len(heldout_types) + 2),
        '| ' + ' | '.join(
            _stat(_get(oaml, f'heldout_occluded/visibility/MAE_{t}'), 3)
            for t in heldout_types) + ' | ' +
        _stat(_get(oaml, 'heldout_occluded/visibility/MAE'), 3) + ' | ' +
        _stat(_get(oaml, 'heldout_clean/visibility/MAE'), 3) + ' |',
    ]
    return '\n'.join(lines)


def merge_files(paths: Sequence[str]) -> Dict[str, float]:
    """Union of several ``--out`` JSON files (disjoint keys)."""
    out: Dict[str, float] = {}
    for p in paths:
        with open(p) as f:
            out.update(json.load(f))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--adaface', nargs='+', required=True,
                   help='baseline --out JSON files of one seed')
    p.add_argument('--oaml', nargs='+', required=True,
                   help='OAML --out JSON files of the same seed')
    args = p.parse_args(argv)
    print(comparison_table([merge_files(args.adaface)],
                           [merge_files(args.oaml)]))


if __name__ == '__main__':
    main()
