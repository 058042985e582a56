"""The SynthFace demo: AdaFace baseline vs OAML, trained and evaluated on CPU.

``make demo`` (``tools/demo.py``) runs :func:`run_demo`, which

1. generates SynthFace in ``data`` if it is missing (``docs/synthface.md``);
2. trains ``configs/synthface/adaface_ir18_synthface.py`` and
   ``configs/synthface/oaml_ir18_synthface.py`` side by side, one torch thread each,
   for the configs' fixed iteration count (the same for both);
3. evaluates both with ``tools/test.py`` on the clean, masked and occluded ``.bin``
   sets, the held-out occluders and faces (docs/synthface.md) and the mini IJB-C;
4. prints one comparison table (accuracy per branch, TAR@FAR), the visibility
   ablation and the occlusion head's visibility error, and writes it to
   ``WORK_DIR/results.md`` (all metrics in ``results.json``).

Examples:
    >>> from projects.occlusion_study.demo import run_demo
    >>> table = run_demo(seeds=[0, 1])  # doctest: +SKIP
"""
import json
import os
import os.path as osp
import resource
import time
from typing import Dict, List, Optional, Sequence

from projects.occlusion_study import synthface_report as report
from projects.occlusion_study import synthface_runs as runs

#: The two models of the demo (keys of :data:`synthface_runs.CONFIGS`).
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


def _synthface_config(spec: str):
    from oaml_mm.synthface import SynthFaceConfig
    kwargs = {}
    for item in spec.split():
        key, _, value = item.partition('=')
        kwargs[key] = float(value) if '.' in value else int(value)
    return SynthFaceConfig(**kwargs)


def generate(data: str, spec: str = '') -> None:
    """Generate SynthFace in ``data`` unless it is there.

    Args:
        data (str): SynthFace folder.
        spec (str): Generator options, e.g. ``'identities=40 images_per_id=4'``
            (:class:`~oaml_mm.synthface.SynthFaceConfig` fields).
    """
    from oaml_mm.synthface import generate_synthface
    t = time.time()
    print(f'[demo] 1/4 SynthFace in {data} (generated if missing)', flush=True)
    generate_synthface(data, _synthface_config(spec))
    print(f'[demo]     ready ({time.time() - t:.0f} s)', flush=True)


def train(data: str, seed_dirs: Dict[int, str], iters: Optional[int] = None,
          jobs: int = 2) -> None:
    """Train both models for every seed, ``jobs`` processes at a time.

    Raises:
        synthface_runs.JobError: A training exited non-zero.
    """
    todo = []
    for seed, wd in seed_dirs.items():
        for m in MODELS:
            cfg = runs.write_run_config(m, osp.join(wd, m), data, iters,
                                        seed=seed)
            todo.append(dict(name=f'{m} s{seed}',
                             cmd=runs.train_command(cfg, osp.join(wd, m)),
                             log=osp.join(wd, m, 'train.log')))
    print(f'[demo] 2/4 training {len(todo)} models, {jobs} at a time '
          '(1 thread each); logs: <work-dir>/seed*/<model>/train.log',
          flush=True)
    t, c = time.time(), _child_cpu()
    runs.run_jobs(todo, max_parallel=jobs, report=runs.print_progress,
                  interval=30)
    _done('trained', t, c)


def evaluate(data: str, seed_dirs: Dict[int, str], iters: Optional[int] = None,
             jobs: int = 2) -> None:
    """Evaluate the last checkpoint of both models on the ``.bin`` sets and IJB-C.

    Writes ``<seed dir>/<model>_{bins,ijbc}.json``.

    Raises:
        synthface_runs.JobError: An evaluation exited non-zero, or a run folder
            holds no checkpoint.
    """
    todo = []
    for seed, wd in seed_dirs.items():
        for m in MODELS:
            ckpt = runs.last_checkpoint(osp.join(wd, m))
            for part, ijbc in (('bins', False), ('ijbc', True)):
                cfg = runs.write_run_config(m, osp.join(wd, m), data, iters,
                                            seed=seed, ijbc=ijbc)
                todo.append(dict(
                    name=f'test {m} {part} s{seed}',
                    cmd=runs.test_command(
                        cfg, ckpt, osp.join(wd, m, f'test_{part}'),
                        osp.join(wd, f'{m}_{part}.json')),
                    log=osp.join(wd, m, f'test_{part}.log')))
    print(f'[demo] 3/4 evaluating with tools/test.py ({len(todo)} runs)',
          flush=True)
    t, c = time.time(), _child_cpu()
    runs.run_jobs(todo, max_parallel=jobs, report=runs.print_progress,
                  interval=30)
    _done('evaluated', t, c)


def collect(seed_dirs: Dict[int, str]) -> Dict[int, Dict[str, dict]]:
    """Metrics per seed and model, merged from the evaluation files."""
    out = {}
    for seed, wd in seed_dirs.items():
        out[seed] = {
            m: report.merge_files(
                [osp.join(wd, f'{m}_{p}.json') for p in ('bins', 'ijbc')])
            for m in MODELS
        }
    return out


def run_demo(data: str = 'data/synthface',
             work_dir: str = 'work_dirs/synthface_demo',
             seeds: Sequence[int] = (0, ),
             iters: Optional[int] = None,
             jobs: int = 2,
             synthface_args: str = '',
             skip_train: bool = False) -> str:
    """Generate, train, evaluate and report the SynthFace demo.

    Args:
        data (str): SynthFace folder (generated when missing).
        work_dir (str): Output folder: ``seed{s}/{model}/`` per run, ``results.md``
            and ``results.json``.
        seeds (Sequence[int]): Training seeds; several give mean ± s.d.
        iters (int, optional): Training iterations; None keeps the configs' budget.
        jobs (int): Processes at once (each uses one thread).
        synthface_args (str): Generator options for a missing data set.
        skip_train (bool): Reuse the checkpoints already in ``work_dir``.

    Returns:
        str: The Markdown table (also printed and written to ``results.md``).

    Raises:
        synthface_runs.JobError: A training or evaluation process failed; the
            message names its log.
    """
    seeds: List[int] = list(seeds)
    t0 = time.time()
    data = osp.abspath(data)
    generate(data, synthface_args)
    seed_dirs = {s: osp.abspath(osp.join(work_dir, f'seed{s}')) for s in seeds}
    if not skip_train:
        train(data, seed_dirs, iters, jobs)
    evaluate(data, seed_dirs, iters, jobs)
    metrics = collect(seed_dirs)
    table = report.comparison_table([metrics[s]['adaface'] for s in seeds],
                                    [metrics[s]['oaml'] for s in seeds])
    budget = iters or 'the configs\''
    title = (f'SynthFace demo: seeds {seeds}, {budget} iterations per '
             'model, narrow IR-18 on CPU')
    os.makedirs(work_dir, exist_ok=True)
    with open(osp.join(work_dir, 'results.md'), 'w') as f:
        f.write(f'# {title}\n\n{table}\n')
    with open(osp.join(work_dir, 'results.json'), 'w') as f:
        json.dump({str(k): v for k, v in metrics.items()}, f, indent=1,
                  sort_keys=True)
    print(f'\n[demo] 4/4 {title}\n\n{table}\n')
    print(f'[demo] done in {(time.time() - t0) / 60:.1f} min; table in '
          f'{osp.join(work_dir, "results.md")}', flush=True)
    return table


if __name__ == '__main__':
    # ``python -m projects.occlusion_study.demo [options]`` is tools/demo.py
    # (same options, malloc tuning included), not a silent no-op.
    import runpy
    runpy.run_path(osp.join(osp.dirname(osp.dirname(osp.dirname(
        osp.abspath(__file__)))), 'tools', 'demo.py'), run_name='__main__')
