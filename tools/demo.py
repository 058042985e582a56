"""The SynthFace demo: AdaFace baseline vs OAML, trained and evaluated on CPU.

``make demo`` runs this after installing. It

1. generates SynthFace in ``--data`` if it is missing (``docs/synthface.md``);
2. trains ``configs/synthface/adaface_ir18_synthface.py`` and
   ``configs/synthface/oaml_ir18_synthface.py`` side by side, one torch thread each,
   for the configs' fixed iteration count (the same for both);
3. evaluates both with ``tools/test.py`` on the clean, masked and occluded ``.bin``
   sets, the held-out occluders and faces (docs/synthface.md) and the mini IJB-C;
4. prints one comparison table (accuracy per branch, TAR@FAR), the visibility
   ablation and the occlusion head's visibility error, and writes it to
   ``WORK_DIR/results.md`` (all metrics in ``results.json``).

Examples:
    python tools/demo.py                       # what `make demo` runs (seed 0)
    python tools/demo.py --seeds 0 1           # the README table (mean ± s.d.)
    python tools/demo.py --iters 20 --data /tmp/sf_small   # a quick smoke run
"""
import argparse
import json
import os
import os.path as osp
import resource
import runpy
import sys
import time

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), 'analysis'))
import synthface_report as report
import synthface_runs as runs

MODELS = ('adaface', 'oaml')


def _child_cpu() -> float:
    """CPU seconds of the finished child processes (and their own children)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _done(stage: str, t_wall: float, t_cpu: float) -> None:
    # CPU time says what the stage costs on an idle machine, whatever the load.
    cpu = _child_cpu() - t_cpu
    print(f'[demo]     {stage} in {time.time() - t_wall:.0f} s wall, '
          f'{cpu:.0f} s CPU of worker processes', flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data', default='data/synthface',
                   help='SynthFace folder (generated when missing)')
    p.add_argument('--work-dir', default='work_dirs/synthface_demo')
    p.add_argument('--seeds', type=int, nargs='+', default=[0],
                   help='training seeds; several give mean ± s.d.')
    p.add_argument('--iters', type=int, default=None,
                   help='training iterations (default: the configs\' budget)')
    p.add_argument('--jobs', type=int, default=2,
                   help='processes at once (each uses one thread)')
    p.add_argument('--synthface-args', default='',
                   help='generator options for a missing data set, e.g. '
                   '"identities=40 images_per_id=4" (SynthFaceConfig fields)')
    p.add_argument('--skip-train', action='store_true',
                   help='reuse the checkpoints already in the work dir')
    return p.parse_args(argv)


def _synthface_config(spec: str):
    from oaml_mm.synthface import SynthFaceConfig
    kwargs = {}
    for item in spec.split():
        key, _, value = item.partition('=')
        kwargs[key] = float(value) if '.' in value else int(value)
    return SynthFaceConfig(**kwargs)


def generate(data: str, spec: str) -> None:
    from oaml_mm.synthface import generate_synthface
    t = time.time()
    print(f'[demo] 1/4 SynthFace in {data} (generated if missing)', flush=True)
    generate_synthface(data, _synthface_config(spec))
    print(f'[demo]     ready ({time.time() - t:.0f} s)', flush=True)


def train(args, seed_dirs: dict) -> None:
    jobs = []
    for seed, wd in seed_dirs.items():
        for m in MODELS:
            cfg = runs.write_run_config(m, osp.join(wd, m), args.data,
                                        args.iters, seed=seed)
            jobs.append(dict(name=f'{m} s{seed}',
                             cmd=runs.train_command(cfg, osp.join(wd, m)),
                             log=osp.join(wd, m, 'train.log')))
    print(f'[demo] 2/4 training {len(jobs)} models, {args.jobs} at a time '
          '(1 thread each); logs: <work-dir>/seed*/<model>/train.log',
          flush=True)
    t, c = time.time(), _child_cpu()
    runs.run_jobs(jobs, max_parallel=args.jobs, report=runs.print_progress,
                  interval=30)
    _done('trained', t, c)


def evaluate(args, seed_dirs: dict) -> None:
    jobs = []
    for seed, wd in seed_dirs.items():
        for m in MODELS:
            ckpt = runs.last_checkpoint(osp.join(wd, m))
            for part, ijbc in (('bins', False), ('ijbc', True)):
                cfg = runs.write_run_config(m, osp.join(wd, m), args.data,
                                            args.iters, seed=seed, ijbc=ijbc)
                jobs.append(dict(
                    name=f'test {m} {part} s{seed}',
                    cmd=runs.test_command(
                        cfg, ckpt, osp.join(wd, m, f'test_{part}'),
                        osp.join(wd, f'{m}_{part}.json')),
                    log=osp.join(wd, m, f'test_{part}.log')))
    print(f'[demo] 3/4 evaluating with tools/test.py ({len(jobs)} runs)',
          flush=True)
    t, c = time.time(), _child_cpu()
    runs.run_jobs(jobs, max_parallel=args.jobs, report=runs.print_progress,
                  interval=30)
    _done('evaluated', t, c)


def collect(seed_dirs: dict) -> dict:
    out = {}
    for seed, wd in seed_dirs.items():
        out[seed] = {
            m: report.merge_files(
                [osp.join(wd, f'{m}_{p}.json') for p in ('bins', 'ijbc')])
            for m in MODELS
        }
    return out


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    args.data = osp.abspath(args.data)
    generate(args.data, args.synthface_args)
    seed_dirs = {s: osp.abspath(osp.join(args.work_dir, f'seed{s}'))
                 for s in args.seeds}
    if not args.skip_train:
        train(args, seed_dirs)
    evaluate(args, seed_dirs)
    metrics = collect(seed_dirs)
    table = report.comparison_table(
        [metrics[s]['adaface'] for s in args.seeds],
        [metrics[s]['oaml'] for s in args.seeds])
    iters = args.iters or 'the configs\''
    title = (f'SynthFace demo: seeds {args.seeds}, {iters} iterations per '
             'model, narrow IR-18 on CPU')
    os.makedirs(args.work_dir, exist_ok=True)
    with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
        f.write(f'# {title}\n\n{table}\n')
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump({str(k): v for k, v in metrics.items()}, f, indent=1,
                  sort_keys=True)
    print(f'\n[demo] 4/4 {title}\n\n{table}\n')
    print(f'[demo] done in {(time.time() - t0) / 60:.1f} min; table in '
          f'{osp.join(args.work_dir, "results.md")}', flush=True)


if __name__ == '__main__':
    # Training and evaluation children inherit the malloc thresholds
    # (oaml_mm/utils/malloc_tuning.py); glibc reads them at start-up only.
    runpy.run_path(osp.join(osp.dirname(osp.abspath(__file__)), '..', 'oaml_mm',
                            'utils', 'malloc_tuning.py'))['reexec_with_malloc_env']()
    try:
        main()
    except runs.JobError as e:
        raise SystemExit(f'[demo] failed: {e}')
