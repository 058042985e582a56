"""Learning-rate / margin-warm-up sweep of the two SynthFace demo models.

A fair comparison gives the AdaFace-only baseline the same tuning effort as OAML:
both models are trained on the same grid of peak learning rates, margin
warm-up lengths and AdaFace scales (and training-batch samplers: P x K or random;
OAML keeps P x K, which its QAConv losses need; OAML alone also has its AdaFace :
QAConv loss split) for the same budget, and each is scored on a *held-out*
SynthFace folder (another generator seed, so other people: the demo's test sets are
never used for the choice) by its own final score: the cosine branch for the
baseline, the fused score for OAML, averaged over the clean, masked and occluded
``.bin`` sets. The best setting of each model is what the demo configs use.

Examples:
    python -m projects.occlusion_study.sweep_synthface --data data/synthface \
        --out work_dirs/synthface_sweep.md
    # the sweep behind the demo configs (docs/synthface_sweep.md): AdaFace scale,
    # learning rate and, for the baseline, the training-batch sampler
    python -m projects.occlusion_study.sweep_synthface --data data/synthface \
        --scales 16 64 --lrs 0.1 0.2 --warmups 0.3 --samplers pk random
    # OAML's loss split at the demo's full budget (docs/synthface_sweep.md)
    python -m projects.occlusion_study.sweep_synthface --data data/synthface \
        --iters 500 \
        --models oaml --samplers pk --scales 16 --lrs 0.1 --warmups 0.3 \
        --adaface-weights 0.1 0.3 0.5 0.7
    # split schedules (fixed, or ramps of the AdaFace weight over the run) of the
    # segmenter OAML, at the demo's budget and 3x it (visibility_predictors.md §12)
    python -m projects.occlusion_study.sweep_synthface --data data/synthface \
        --iters 500 --models oaml_seg --segmenter work_dirs/seg/seed0/iter_800.pth \
        --samplers pk --scales 16 --lrs 0.1 --warmups 0.3 \
        --adaface-schedules 0.1 0.1:0.3 0.1:0.5 0.1:0.7
    # smaller, e.g. for a smoke test
    python -m projects.occlusion_study.sweep_synthface --data /tmp/sf \
        --val-data /tmp/sf_val \
        --iters 20 --lrs 0.1 --warmups 0.3 --out /tmp/sweep.md
"""
import argparse
import itertools
import json
import os
import os.path as osp
import time

from projects.occlusion_study import synthface_runs as runs

VAL_SETS = ('clean', 'masked', 'occluded')
#: The held-out sweep folder: a different seed (other people), small training part.
VAL_DATA_ARGS = dict(seed=1, identities=20, images_per_id=2, occluded_per_id=1,
                     test_identities=120, val_pairs=600, ijbc_subjects=10)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data', default='data/synthface',
                   help='SynthFace folder to train on (generated if missing)')
    p.add_argument('--val-data', default='data/synthface_sweepval',
                   help='held-out SynthFace folder scored by the sweep '
                   '(generated with seed 1 if missing)')
    p.add_argument('--work-dir', default='work_dirs/synthface_sweep')
    p.add_argument('--models', nargs='+', default=['adaface', 'oaml'],
                   choices=sorted(runs.CONFIGS))
    p.add_argument('--iters', type=int, default=250,
                   help='training iterations per run (short runs)')
    p.add_argument('--lrs', type=float, nargs='+', default=[0.1, 0.2])
    p.add_argument('--warmups', type=float, nargs='+', default=[0.0, 0.3],
                   help='margin warm-up fractions')
    p.add_argument('--scales', type=float, nargs='+', default=[None],
                   help='AdaFace scales s (default: the config\'s)')
    p.add_argument('--samplers', nargs='+', default=[None],
                   choices=sorted(runs.SAMPLERS),
                   help='training-batch samplers (default: the config\'s); '
                   'OAML runs only with pk, whose positives QAConv needs')
    p.add_argument('--adaface-weights', type=float, nargs='+', default=[None],
                   help='OAML only: AdaFace loss weight w, QAConv weight 1-w '
                   '(default: the config\'s 0.1 / 0.9)')
    p.add_argument('--adaface-schedules', nargs='+', default=None,
                   metavar='W[:W1]',
                   help='OAML only, instead of --adaface-weights: AdaFace : QAConv '
                   'split schedules, W (fixed W : 1-W) or W0:W1 (the AdaFace '
                   'weight ramps from W0 to W1 over the run)')
    p.add_argument('--segmenter', default=None,
                   help='segmenter checkpoint of models that read one '
                   '(oaml_seg, oaml_seg_sched)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--jobs', type=int, default=2, help='processes at once')
    p.add_argument('--skip-train', action='store_true',
                   help='evaluate the checkpoints already in the work dir')
    p.add_argument('--out', default='work_dirs/synthface_sweep.md',
                   help='Markdown table (a .json with every metric beside it)')
    args = p.parse_args(argv)
    if args.adaface_schedules and args.adaface_weights != [None]:
        p.error('--adaface-schedules and --adaface-weights exclude each other')
    if (args.adaface_schedules or args.adaface_weights != [None]) and not any(
            runs.FAMILY[m] == 'oaml' for m in args.models):
        p.error('--adaface-schedules / --adaface-weights set the OAML loss split; '
                f'--models {" ".join(args.models)} has no OAML model')
    splits = {}
    for spec in args.adaface_schedules or []:
        try:
            split = runs.parse_split_schedule(spec)
        except ValueError as e:
            p.error(f'--adaface-schedules: {e}')
        if split in splits:
            p.error(f'--adaface-schedules: {splits[split]!r} and {spec!r} are '
                    'one schedule; two runs of it would train in one work dir')
        splits[split] = spec
    # A value given twice is one run dir trained twice at once.
    for flag in ('models', 'lrs', 'warmups', 'scales', 'samplers',
                 'adaface_weights'):
        values = getattr(args, flag)
        twice = sorted({str(v) for v in values if values.count(v) > 1})
        if twice:
            p.error(f"--{flag.replace('_', '-')}: {', '.join(twice)} given "
                    'twice; two runs of it would train in one work dir')
    return args


def ensure_data(data: str, val_data: str) -> None:
    from oaml_mm.synthface import SynthFaceConfig, generate_synthface
    generate_synthface(data, SynthFaceConfig())
    generate_synthface(val_data, SynthFaceConfig(**VAL_DATA_ARGS))


def score(model: str, metrics: dict) -> float:
    """Mean accuracy of the model's own final branch over the three sets."""
    branch = runs.MAIN_BRANCH[runs.FAMILY[model]]
    return sum(metrics[f'{s}/{branch}/accuracy'] for s in VAL_SETS) / len(
        VAL_SETS)


def _tag(r: dict) -> str:
    tag = f"lr={r['lr']:g} wu={r['warmup']:g}"
    if r['scale'] is not None:
        tag += f" s={r['scale']:g}"
    if r['sampler'] is not None:
        tag += f" {r['sampler']}"
    if r.get('adaface_weight') is not None:
        tag += f" aw={r['adaface_weight']:g}"
    if r.get('adaface_schedule') is not None:
        tag += f" as={r['adaface_schedule']}"
    return tag


def make_grid(args) -> list:
    """``(model, sampler, scale, lr, warmup, adaface_weight, adaface_schedule)``
    of every run.

    OAML models run only with P x K batches. The loss-split axis (weights or
    schedules) is OAML's alone (the baseline has one loss): baseline runs keep
    the config's (None).
    """
    splits = ([(None, s) for s in args.adaface_schedules]
              if getattr(args, 'adaface_schedules', None) else
              [(w, None) for w in args.adaface_weights])
    grid = []
    for g in itertools.product(args.models, args.samplers, args.scales,
                               args.lrs, args.warmups):
        oaml = runs.FAMILY[g[0]] == 'oaml'
        if oaml and g[1] == 'random':
            continue
        for split in (splits if oaml else [(None, None)]):
            grid.append(g + split)
    return grid


def check_segmenter(args, models) -> None:
    """Check ``--segmenter`` before any run starts, for the ``models`` that load
    one (:func:`~projects.occlusion_study.synthface_runs.reads_segmenter`): it
    must exist and hold ``segmenter.`` weights, else every run would fail in its
    ``train.log``.

    Raises:
        SystemExit: A model loads a segmenter and ``--segmenter`` names none.
        MissingFileError: The checkpoint does not exist.
        DataFormatError: It is a directory, unreadable, or holds no
            ``segmenter.`` weights (:func:`~projects.occlusion_study.
            occlusion_study.check_segmenter_checkpoint`).
    """
    from oaml_mm.errors import MissingFileError
    from projects.occlusion_study.occlusion_study import \
        check_segmenter_checkpoint
    for model in dict.fromkeys(models):
        if not runs.reads_segmenter(model):
            continue
        if not args.segmenter:
            raise SystemExit(f'sweep: {model} reads a segmenter; name its '
                             f'checkpoint with --segmenter')
        if not osp.exists(args.segmenter):
            raise MissingFileError(args.segmenter,
                                   'the --segmenter checkpoint')
        check_segmenter_checkpoint(osp.abspath(args.segmenter), args.seed)


def sweep(args) -> list:
    grid = make_grid(args)
    check_segmenter(args, [g[0] for g in grid])
    results = []
    for model, sampler, scale, lr, wu, aw, sched in grid:
        r = dict(model=model, lr=lr, warmup=wu, scale=scale, sampler=sampler,
                 adaface_weight=aw, adaface_schedule=sched)
        segmenter = args.segmenter if runs.reads_segmenter(model) else None
        wd = osp.join(args.work_dir,
                      model + '_' + _tag(r).replace('=', '').replace(' ', '_')
                      .replace(':', '-'))  # no ':' in paths (scp, Windows)
        cfg = runs.write_run_config(model, wd, args.data, args.iters, lr, wu,
                                    args.seed, test_data_root=args.val_data,
                                    scale=scale, sampler=sampler,
                                    adaface_weight=aw, segmenter=segmenter,
                                    adaface_schedule=sched)
        results.append(dict(r, work_dir=wd, config=cfg))
    print(f'sweep: {len(results)} runs of {args.iters} iterations, '
          f'{args.jobs} at a time', flush=True)
    t0 = time.time()
    if not args.skip_train:
        runs.run_jobs([
            dict(name=f"{r['model']} {_tag(r)}",
                 cmd=runs.train_command(r['config'], r['work_dir']),
                 log=osp.join(r['work_dir'], 'train.log')) for r in results
        ], max_parallel=args.jobs, report=runs.print_progress, interval=30)
    runs.run_jobs([
        dict(name=f"test {r['model']} {_tag(r)}",
             cmd=runs.test_command(
                 r['config'], runs.last_checkpoint(r['work_dir']),
                 osp.join(r['work_dir'], 'test'),
                 osp.join(r['work_dir'], 'val_metrics.json')),
             log=osp.join(r['work_dir'], 'test.log')) for r in results
    ], max_parallel=args.jobs, report=runs.print_progress, interval=30)
    for r in results:
        m = runs.read_metrics(osp.join(r['work_dir'], 'val_metrics.json'))
        r['metrics'] = m
        r['score'] = score(r['model'], m)
    print(f'sweep: done in {time.time() - t0:.0f} s', flush=True)
    return results


def best_settings(results: list) -> dict:
    """Model -> the result with the highest score (ties: the first in the grid)."""
    best = {}
    for r in results:
        if r['model'] not in best or r['score'] > best[r['model']]['score']:
            best[r['model']] = r
    return best


def _weights(r: dict) -> str:
    w = r.get('adaface_weight')
    if runs.FAMILY[r['model']] != 'oaml':
        return '-'
    if r.get('adaface_schedule') is not None:
        return runs.split_schedule_tag(r['adaface_schedule'])
    return 'config' if w is None else f'{w:g} : {1 - w:g}'


def _adaface_branch(r: dict) -> str:
    """Mean accuracy of the cosine (AdaFace) branch: for OAML models it shows
    whether the branch starves under the split."""
    m = r['metrics']
    mean = sum(m[f'{s}/adaface/accuracy'] for s in VAL_SETS) / len(VAL_SETS)
    return f'{mean:.1f}'


def write_report(args, results: list, path: str) -> None:
    best = best_settings(results)
    lines = [
        '| model | sampler | s | peak lr | margin warm-up | AdaFace : QAConv '
        '| branch | clean | masked | occluded | mean | AdaFace branch mean '
        '| chosen |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for r in results:
        b = runs.MAIN_BRANCH[runs.FAMILY[r["model"]]]
        accs = [r['metrics'][f'{s}/{b}/accuracy'] for s in VAL_SETS]
        mark = 'yes' if best[r['model']] is r else ''
        lines.append(
            f"| {r['model']} | {r['sampler'] or 'config'} | "
            f"{'config' if r['scale'] is None else format(r['scale'], 'g')} | "
            f"{r['lr']:g} | {r['warmup']:g} | {_weights(r)} | {b} | " +
            ' | '.join(f'{a:.1f}' for a in accs) +
            f" | {r['score']:.1f} | {_adaface_branch(r)} | {mark} |")
    table = '\n'.join(lines)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(osp.splitext(path)[0] + '.json', 'w') as f:
        json.dump(dict(iters=args.iters, seed=args.seed, lrs=args.lrs,
                       warmups=args.warmups, scales=args.scales,
                       samplers=args.samplers,
                       adaface_weights=args.adaface_weights,
                       adaface_schedules=args.adaface_schedules,
                       runs=[{k: v for k, v in r.items() if k != 'config'}
                             for r in results]), f, indent=1, sort_keys=True)
    with open(path, 'w') as f:
        f.write(table + '\n')
    print(table)


def main(argv=None):
    args = parse_args(argv)
    ensure_data(args.data, args.val_data)
    results = sweep(args)
    write_report(args, results, args.out)
    for model, r in best_settings(results).items():
        print(f"best {model}: {_tag(r)} (score {r['score']:.2f})")


if __name__ == '__main__':
    runs.run_cli(main, 'sweep:')
