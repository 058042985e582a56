"""Choose OAML's AdaFace : QAConv split schedule from split-schedule sweeps.

Reads the JSON files :mod:`projects.occlusion_study.sweep_synthface` writes (runs
with ``--adaface-schedules`` at the demo's budget for several seeds, and at a longer
budget beside the fair AdaFace baseline) and applies the rule of
``visibility_predictors.md`` §12:

1. at the longer budget, a schedule *starves the AdaFace branch* when OAML's deciding
   score (``fused``), averaged over all six ``.bin`` sets of the sweep folder, is more
   than ``--tolerance`` points below the baseline's cosine score on the same sets;
2. among the schedules that do not starve, the highest sweep score at the demo's
   budget (mean over its seeds) is chosen;
3. if every schedule starves, the one with the smallest shortfall is chosen.

Every run needs a split schedule, each schedule one run per seed at the demo
budget and one run at the longer budget, every set its metrics, the baseline an
AdaFace model; the demo-budget files share one budget, the longer-budget
files and the baseline a larger one. Anything else is refused in one line naming the
file (:func:`choose`).

Example:
    python -m projects.occlusion_study.split_schedule_choice \\
        --short work_dirs/sched_sweep/it500/seed0/oaml.json \\
                work_dirs/sched_sweep/it500/seed1/oaml.json \\
        --long work_dirs/sched_sweep/it1500/seed0/oaml_a.json \\
               work_dirs/sched_sweep/it1500/seed0/oaml_b.json \\
        --long-baseline work_dirs/sched_sweep/it1500/seed0/adaface.json
"""
import argparse
import json
import os.path as osp
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

from oaml_mm.errors import ConfigError, DataFormatError, MissingFileError
from projects.occlusion_study import synthface_runs as runs
from projects.occlusion_study.sweep_synthface import VAL_SETS

#: Every ``.bin`` set of a SynthFace folder: the sweep score's three and the
#: held-out faces and occluders.
ALL_SETS = VAL_SETS + ('heldout_clean', 'heldout_masked', 'heldout_occluded')


def read_runs(paths: Sequence[str]) -> List[dict]:
    """The runs of sweep JSON files, each with its file's budget and path.

    Args:
        paths (Sequence[str]): JSON files written by ``sweep_synthface.py``.

    Returns:
        list[dict]: The files' ``runs``, each copied with ``iters`` (the file's
        training budget, None when it records none), ``seed`` (the run's or
        else the file's seed, None when neither records one) and ``source``
        (its path).

    Raises:
        MissingFileError: A file does not exist.
        DataFormatError: A file is not JSON or has no list of ``runs``.
    """
    out = []
    for path in paths:
        if not osp.isfile(path):
            raise MissingFileError(path, 'a sweep JSON of sweep_synthface.py')
        try:
            with open(path) as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataFormatError(path, f'not a JSON file ({e})') from None
        if not isinstance(data, dict) or not isinstance(data.get('runs'), list):
            raise DataFormatError(path, 'expected a sweep JSON of '
                                  'sweep_synthface.py (an object with "runs")')
        for i, run in enumerate(data['runs']):
            if not isinstance(run, dict) or 'metrics' not in run:
                raise DataFormatError(path, 'expected a run with "metrics"',
                                      record=i)
            out.append(dict(run, iters=data.get('iters'),
                            seed=run.get('seed', data.get('seed')),
                            source=path))
    return out


def _where(run: dict) -> str:
    return f"{run.get('source', 'a run')} ({run.get('work_dir', '?')})"


def _budget(group: Sequence[dict], name: str) -> Optional[int]:
    iters = {r.get('iters') for r in group} - {None}
    if len(iters) > 1:
        raise ConfigError(f'{name} runs mix training budgets {sorted(iters)}: '
                          + '; '.join(f"{r.get('iters')} in {_where(r)}"
                                      for r in group))
    return iters.pop() if iters else None


def _check_runs(short: Sequence[dict], long: Sequence[dict],
                baseline: dict) -> None:
    """What :func:`choose` needs of its runs; see there."""
    for name, group in (('demo-budget', short), ('longer-budget', long)):
        for r in group:
            if r.get('adaface_schedule') is None:
                kind = ('the AdaFace baseline (pass it as --long-baseline)'
                        if runs.FAMILY.get(r.get('model')) == 'adaface' else
                        'a run without adaface_schedule (a sweep without '
                        '--adaface-schedules?)')
                raise ConfigError(f'{name} run {_where(r)} is {kind}; every '
                                  'run there needs a split schedule')
    for name, group in (('demo-budget', short), ('longer-budget', long)):
        if not group:
            raise ConfigError(f'the {name} files hold no runs')
    # A seed counted twice would weigh it double in the demo-budget mean (the
    # same file given twice, or two sweeps of one seed).
    at_seed: Dict[tuple, dict] = {}
    for r in short:
        if r.get('seed') is not None:
            key = (r['adaface_schedule'], r['seed'])
        elif r.get('source') is not None:
            key = (r['adaface_schedule'], osp.realpath(r['source']),
                   r.get('work_dir'))
        else:
            continue
        if key in at_seed:
            raise ConfigError(
                f"schedule {key[0]!r} has two demo-budget runs at seed "
                f"{r.get('seed')}: {_where(at_seed[key])} and {_where(r)}; "
                'one run per schedule and seed (a file given twice?)')
        at_seed[key] = r
    seen: Dict[str, dict] = {}
    for r in long:
        sched = r['adaface_schedule']
        if sched in seen:
            raise ConfigError(
                f'schedule {sched!r} has two runs at the longer budget: '
                f'{_where(seen[sched])} and {_where(r)}; one run per schedule')
        seen[sched] = r
    model = baseline.get('model')
    if model is not None and runs.FAMILY.get(model) != 'adaface':
        raise ConfigError(f'baseline {_where(baseline)} is {model!r}, not a '
                          'model of the AdaFace family')
    s_iters = _budget(short, 'demo-budget')
    l_iters = _budget(long, 'longer-budget')
    b_iters = baseline.get('iters')
    if s_iters is not None and l_iters is not None and l_iters <= s_iters:
        raise ConfigError(f'the longer budget ({l_iters} iterations) is not '
                          f'longer than the demo budget ({s_iters}); are '
                          '--short and --long swapped?')
    if b_iters is not None and l_iters is not None and b_iters != l_iters:
        raise ConfigError(f'baseline {_where(baseline)} trained {b_iters} '
                          f'iterations, the longer-budget runs {l_iters}')


def mean_accuracy(metrics: Dict[str, float], branch: str,
                  sets: Sequence[str], run: Optional[dict] = None) -> float:
    """Mean 10-fold accuracy (%) of ``branch`` over ``sets``.

    Args:
        metrics (dict): A sweep run's metrics (``<set>/<branch>/accuracy``).
        branch (str): ``'fused'`` or ``'adaface'``.
        sets (Sequence[str]): The ``.bin`` sets to average.
        run (dict, optional): The run the metrics come from, to name its file
            (``source``) and ``work_dir`` in the error.

    Raises:
        DataFormatError: A set or branch is missing from ``metrics`` (named,
            with the run's file).
    """
    keys = [f'{s}/{branch}/accuracy' for s in sets]
    missing = [k for k in keys if k not in metrics]
    if missing:
        run = run or {}
        raise DataFormatError(run.get('source', 'sweep metrics'),
                              f'the metrics lack {missing}',
                              record=run.get('work_dir'))
    return sum(metrics[k] for k in keys) / len(keys)


def choose(short: Sequence[dict], long: Sequence[dict], baseline: dict,
           tolerance: float = 1.0) -> Tuple[str, List[dict]]:
    """Apply the rule; return the chosen schedule and one row per schedule.

    Args:
        short (Sequence[dict]): Sweep runs at the demo's budget (any seeds), each
            with ``adaface_schedule`` and ``metrics``.
        long (Sequence[dict]): Sweep runs at the longer budget.
        baseline (dict): The AdaFace baseline's run at the longer budget.
        tolerance (float): Points of shortfall allowed before a schedule counts
            as starving. Defaults to 1.0.

    Returns:
        tuple: ``(schedule, rows)``; each row has ``schedule``, ``short`` (mean
        sweep score), ``short_seeds`` (the seeds' scores), ``long`` (six-set
        fused mean), ``long_adaface`` (six-set AdaFace-branch mean),
        ``shortfall`` (baseline minus ``long``) and ``starves``.

    Runs read by :func:`read_runs` carry their budget (``iters``): the
    demo-budget runs must share one, the longer-budget runs another, larger,
    one, and the baseline the latter.

    Raises:
        DataFormatError: A run's metrics lack a set (names the file).
        ConfigError: A budget has no runs, a schedule has no run at one of the
            budgets, a run lacks ``adaface_schedule`` (an AdaFace run or an
            older sweep's), a schedule has two demo-budget runs at one seed
            (a file given twice), or two runs at the longer budget, the
            baseline is not of the AdaFace family, or the budgets are mixed or
            not increasing (each names the file).
    """
    _check_runs(short, long, baseline)
    base = mean_accuracy(baseline['metrics'], 'adaface', ALL_SETS, baseline)
    scores = defaultdict(list)
    for r in short:
        scores[r['adaface_schedule']].append(
            mean_accuracy(r['metrics'], 'fused', VAL_SETS, r))
    longs = {r['adaface_schedule']: r for r in long}
    if set(scores) != set(longs):
        raise ConfigError(f'schedules at the demo budget {sorted(scores)} and '
                          f'at the longer budget {sorted(longs)} differ')
    rows = []
    for sched, vals in scores.items():
        m = longs[sched]['metrics']
        fused = mean_accuracy(m, 'fused', ALL_SETS, longs[sched])
        rows.append(dict(schedule=sched, short=sum(vals) / len(vals),
                         short_seeds=vals, long=fused,
                         long_adaface=mean_accuracy(m, 'adaface', ALL_SETS,
                                                    longs[sched]),
                         shortfall=base - fused,
                         starves=base - fused > tolerance))
    fed = [r for r in rows if not r['starves']]
    best = (max(fed, key=lambda r: r['short']) if fed else
            min(rows, key=lambda r: r['shortfall']))
    return best['schedule'], rows


def table(rows: Sequence[dict], chosen: str, base: float) -> str:
    lines = ['| AdaFace : QAConv | sweep score at the demo budget (seeds) '
             '| mean | longer budget: fused (6 sets) | AdaFace branch (6 sets) '
             '| below the baseline | starves | chosen |',
             '|---|---|---|---|---|---|---|---|']
    for r in sorted(rows, key=lambda r: runs.parse_split_schedule(
            r['schedule'])[::-1]):
        seeds = ' / '.join(f'{v:.1f}' for v in r['short_seeds'])
        lines.append(
            f"| {runs.split_schedule_tag(r['schedule'])} | {seeds} | "
            f"{r['short']:.1f} | {r['long']:.1f} | {r['long_adaface']:.1f} | "
            f"{r['shortfall']:+.1f} | {'yes' if r['starves'] else 'no'} | "
            f"{'yes' if r['schedule'] == chosen else ''} |")
    lines.append(f'\nFair AdaFace baseline at the longer budget: {base:.1f} '
                 '(cosine, mean of the six sets).')
    return '\n'.join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--short', nargs='+', required=True,
                   help='sweep JSONs at the demo budget (one per seed)')
    p.add_argument('--long', nargs='+', required=True,
                   help='sweep JSONs at the longer budget')
    p.add_argument('--long-baseline', required=True,
                   help="the AdaFace baseline's sweep JSON at the longer budget")
    p.add_argument('--tolerance', type=float, default=1.0)
    return p.parse_args(argv)


def main(argv=None):
    from oaml_mm.apis.runner_setup import exit_on_error
    args = parse_args(argv)
    with exit_on_error():
        found = read_runs([args.long_baseline])
        baselines = [r for r in found
                     if runs.FAMILY.get(r.get('model')) == 'adaface']
        if len(baselines) != 1:
            raise ConfigError(
                f'{args.long_baseline}: expected one run of an AdaFace model, '
                f'found {len(baselines)} among {len(found)}')
        baseline = baselines[0]
        chosen, rows = choose(read_runs(args.short), read_runs(args.long),
                              baseline, args.tolerance)
    base = mean_accuracy(baseline['metrics'], 'adaface', ALL_SETS)
    print(table(rows, chosen, base))
    print(f'chosen: {runs.split_schedule_tag(chosen)} ({chosen})')


if __name__ == '__main__':
    main()
