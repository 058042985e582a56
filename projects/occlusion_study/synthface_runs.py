"""SynthFace trainings and evaluations as subprocesses, shared by the demo and sweep.

The demo (``tools/demo.py``, :mod:`projects.occlusion_study.demo`), the learning-rate /
margin sweep (:mod:`projects.occlusion_study.sweep_synthface`) and the occlusion study
(:mod:`projects.occlusion_study.occlusion_study`) train the two SynthFace configs
(``configs/synthface/``) with ``tools/train.py`` and evaluate them with
``tools/test.py``. This module writes one fully resolved config per run (budget,
learning rate, margin warm-up, seed and data folders set in one place), launches the
processes side by side with one torch thread each (docs/synthface.md: two 1-thread
processes beat one 2-thread process on 2 cores) and reports their progress.
"""
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
_SF = osp.join(ROOT, 'configs', 'synthface')
_STUDY = osp.join(ROOT, 'projects', 'occlusion_study', 'configs')
#: Every SynthFace model the demo and the studies train: name -> config. The demo
#: trains the first two (``configs/synthface/``); the occlusion study
#: (``occlusion_study.py``) all of them, the others from this project's ``configs/``.
CONFIGS = {
    'adaface': osp.join(_SF, 'adaface_ir18_synthface.py'),
    'oaml': osp.join(_SF, 'oaml_ir18_synthface.py'),
    # The standard model of the OAML paper's comparison: clean training data only.
    'adaface_cleanonly': osp.join(_STUDY, 'adaface_ir18_synthface_cleanonly.py'),
    # OAML with every use of visibility switched off.
    'oaml_novis': osp.join(_STUDY, 'oaml_ir18_synthface_novis.py'),
    # The capabilities of the occlusion study (docs/occlusion_study.md).
    'oaml_randocc': osp.join(_STUDY, 'oaml_ir18_synthface_randocc.py'),
    'oaml_visemb': osp.join(_STUDY, 'oaml_ir18_synthface_visemb.py'),
    'oaml_randocc_visemb': osp.join(_STUDY,
                                    'oaml_ir18_synthface_randocc_visemb.py'),
    # The loss split (AdaFace : QAConv 0.3 : 0.7, 0.5 : 0.5; the demo's is 0.1 : 0.9),
    # alone and with visibility in the global branch.
    'oaml_ada03': osp.join(_STUDY, 'oaml_ir18_synthface_ada03.py'),
    'oaml_ada05': osp.join(_STUDY, 'oaml_ir18_synthface_ada05.py'),
    'oaml_ada03_visemb': osp.join(_STUDY, 'oaml_ir18_synthface_ada03_visemb.py'),
    # The control at 0.5 : 0.5: what awareness earns at that split.
    'oaml_novis_ada05': osp.join(_STUDY, 'oaml_ir18_synthface_novis_ada05.py'),
    # OAML with the image-reading OcclusionSegmenter (trained on its own, frozen
    # here) as its visibility predictor; each run names its segmenter checkpoint
    # (write_run_config(segmenter=...), occlusion_study.py --segmenter).
    'oaml_seg': osp.join(_SF, 'oaml_ir18_synthface_segmenter.py'),
    'oaml_seg_sched': osp.join(_STUDY,
                               'oaml_ir18_synthface_segmenter_adasched.py'),
    # The same with QAConv trained on the segmenter's prediction or on no
    # visibility, instead of the gated true masks.
    'oaml_seg_qpred': osp.join(_STUDY, 'oaml_ir18_synthface_segmenter_qpred.py'),
    'oaml_seg_qnone': osp.join(_STUDY, 'oaml_ir18_synthface_segmenter_qnone.py'),
}
#: The family of each model: ``'adaface'`` (one cosine branch) or ``'oaml'``.
FAMILY = {name: 'adaface' if name.startswith('adaface') else 'oaml'
          for name in CONFIGS}
#: Mini IJB-C test sections per family, laid over a model's own config.
IJBC_CONFIGS = {
    'adaface': osp.join(_SF, 'adaface_ir18_synthface_ijbc.py'),
    'oaml': osp.join(_SF, 'oaml_ir18_synthface_ijbc.py'),
}
#: The branch each family is judged by: its own final score.
MAIN_BRANCH = {'adaface': 'adaface', 'oaml': 'fused'}
#: Training-batch samplers the sweep can choose between (batch size -> config).
SAMPLERS = {
    'pk': lambda bs: dict(type='PKSampler', batch_size=bs, num_instances=4),
    'random': lambda bs: dict(type='DefaultSampler', shuffle=True),
}
_ITER_RE = re.compile(r'Iter\(train\) \[\s*(\d+)/(\d+)\]')


def write_run_config(model: str,
                     work_dir: str,
                     data_root: str,
                     max_iters: Optional[int] = None,
                     lr: Optional[float] = None,
                     margin_warmup: Optional[float] = None,
                     seed: int = 0,
                     test_data_root: Optional[str] = None,
                     ijbc: bool = False,
                     scale: Optional[float] = None,
                     sampler: Optional[str] = None,
                     adaface_weight: Optional[float] = None,
                     segmenter: Optional[str] = None,
                     adaface_schedule: Optional[str] = None) -> str:
    """Resolve a SynthFace config for one run and write it into ``work_dir``.

    The schedule keeps the shape of ``configs/synthface/_base_/synthface_schedule.py``
    (linear warm-up over 5%, x0.1 at 70% and 90%) at any ``max_iters``: it is
    rescaled by :func:`oaml_mm.utils.rescale_schedule`, as for
    ``--cfg-options train_cfg.max_iters=N``.

    Args:
        model (str): A key of :data:`CONFIGS` (``'adaface'``, ``'oaml'``, ...).
        work_dir (str): Run folder (created).
        data_root (str): SynthFace folder used for training.
        max_iters (int, optional): Training iterations; None keeps the config's.
        lr (float, optional): Peak SGD learning rate; None keeps the config's.
        margin_warmup (float, optional): Fraction of the iterations the margin
            ramp lasts; None keeps the config's.
        seed (int): Run seed (``randomness.seed``).
        test_data_root (str, optional): SynthFace folder evaluated by ``tools/test.py``
            (the sweep's held-out folder); defaults to ``data_root``.
        ijbc (bool): Write the mini IJB-C test config instead of the ``.bin`` one.
        scale (float, optional): AdaFace scale ``s``; None keeps the config's.
        sampler (str, optional): ``'pk'`` (P x K batches, 8 x 4) or ``'random'``
            (shuffled, identity-diverse batches) for the training batch; None keeps
            the config's. OAML needs ``'pk'``: QAConv's in-batch losses need
            positives.
        adaface_weight (float, optional): OAML only: loss weights become
            ``adaface=w, qaconv=1-w`` (the demo's split is ``w=0.1``); the
            occlusion weight is kept. None keeps the config's.
        segmenter (str, optional): Models whose visibility predictor is an
            ``OcclusionSegmenter`` (:func:`reads_segmenter`) only: the trained
            segmenter checkpoint it loads (``model.neck.init_cfg.checkpoint``,
            made absolute). None keeps the config's.
        adaface_schedule (str, optional): OAML only: the AdaFace : QAConv split as
            ``'W'`` (fixed ``W : 1-W``) or ``'W0:W1'`` (a linear ramp of the
            AdaFace weight from ``W0`` to ``W1`` over the run, QAConv taking the
            rest: ``LossWeightScheduleHook``, so it follows ``max_iters``).
            Replaces any split or schedule of the config; excludes
            ``adaface_weight``. None keeps the config's.

    Returns:
        str: Path of the written config.

    Raises:
        ValueError: ``model`` is unknown, or a setting does not apply to it
            (``adaface_weight`` to an AdaFace model, ``segmenter`` to a model
            without a segmenter), or ``adaface_schedule`` is malformed or given
            with ``adaface_weight``.
    """
    from oaml_mm.utils import load_config, merge_cfg_options
    if model not in CONFIGS:
        raise ValueError(f'unknown SynthFace model {model!r}; one of '
                         f'{sorted(CONFIGS)}')
    src = CONFIGS[model]
    cfg = load_config(src)
    if ijbc:
        # The model's own config with its family's mini IJB-C test sections.
        ijb = load_config(IJBC_CONFIGS[FAMILY[model]])
        for key in ('test_data_root', 'test_dataloader', 'test_evaluator'):
            cfg[key] = ijb[key]
    max_iters = int(max_iters or cfg.train_cfg.max_iters)
    # The schedule follows max_iters as for users (rescale_schedule).
    merge_cfg_options(
        cfg, {'data_root': data_root, 'occlusion_data_root': data_root,
              'val_data_root': data_root,
              'test_data_root': test_data_root or data_root,
              'train_cfg.max_iters': max_iters})
    if lr is not None:
        cfg.optim_wrapper.optimizer.lr = float(lr)
    if scale is not None:
        cfg.model.head.s = float(scale)
    if adaface_weight is not None:
        if FAMILY[model] != 'oaml':
            raise ValueError(
                f'adaface_weight is an OAML setting; {model!r} has one loss')
        w = float(adaface_weight)
        if not 0.0 < w < 1.0:
            raise ValueError(f'adaface_weight must lie in (0, 1), got {w}')
        cfg.model.loss_weights.update(adaface=w, qaconv=1.0 - w)
    if adaface_schedule is not None:
        if FAMILY[model] != 'oaml' or adaface_weight is not None:
            raise ValueError(
                f'adaface_schedule is an OAML setting and excludes adaface_weight; '
                f'got model {model!r}, adaface_weight={adaface_weight!r}')
        start, end = parse_split_schedule(adaface_schedule)
        cfg.model.loss_weights.update(adaface=start, qaconv=1.0 - start)
        hooks = [h for h in cfg.get('custom_hooks', [])
                 if h['type'] != 'LossWeightScheduleHook']
        if end != start:
            hooks.append(dict(type='LossWeightScheduleHook', key='adaface',
                              start=start, end=end, complement='qaconv',
                              total=1.0))
        cfg.custom_hooks = hooks
    if segmenter is not None:
        if not _has_segmenter(cfg):
            raise ValueError(f'segmenter is a setting of a model whose neck is an '
                             f'OcclusionSegmenter; {model!r} has none')
        cfg.model.neck.init_cfg.checkpoint = osp.abspath(segmenter)
        if 'segmenter_checkpoint' in cfg:  # the base config's variable, too
            cfg.segmenter_checkpoint = osp.abspath(segmenter)
    if sampler is not None:
        cfg.train_dataloader.sampler = SAMPLERS[sampler](
            cfg.train_dataloader.batch_size)
    for hook in cfg.custom_hooks:
        if hook['type'] == 'MarginWarmupHook' and margin_warmup is not None:
            hook['warmup_ratio'] = float(margin_warmup)
    cfg.randomness = dict(seed=int(seed), deterministic=False)
    cfg.default_hooks.logger.interval = max(1, min(25, max_iters // 10))
    os.makedirs(work_dir, exist_ok=True)
    name = osp.splitext(osp.basename(src))[0] + ('_ijbc' if ijbc else '')
    path = osp.join(work_dir, f'{name}_run.py')
    cfg.dump(path)
    return path


def parse_split_schedule(spec: str) -> Tuple[float, float]:
    """``(start, end)`` AdaFace weights of a split schedule ``'W'`` or ``'W0:W1'``.

    Examples:
        >>> parse_split_schedule('0.1'), parse_split_schedule('0.1:0.5')
        ((0.1, 0.1), (0.1, 0.5))

    Raises:
        ValueError: Not one or two numbers separated by ``:``, or a weight outside
            (0, 1).
    """
    parts = str(spec).split(':')
    try:
        if len(parts) not in (1, 2):
            raise ValueError
        weights = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f'AdaFace split schedule {spec!r}: expected W or W0:W1 '
                         f'(AdaFace loss weights in (0, 1), e.g. 0.1:0.5)') from None
    if not all(0.0 < w < 1.0 for w in weights):
        raise ValueError(f'AdaFace split schedule {spec!r}: weights must lie in '
                         f'(0, 1)')
    return weights[0], weights[-1]


def split_schedule_tag(spec: str) -> str:
    """Human form of a split schedule: ``'0.1 : 0.9'``, ``'0.1 : 0.9 -> 0.5 : 0.5'``."""
    start, end = parse_split_schedule(spec)
    fixed = f'{start:g} : {1 - start:g}'
    return fixed if end == start else f'{fixed} -> {end:g} : {1 - end:g}'


def config_split(cfg) -> Tuple[float, float]:
    """``(start, end)`` AdaFace weights an OAML config trains with.

    The ``start`` and ``end`` of a ``LossWeightScheduleHook`` ramping
    ``adaface``, else ``model.loss_weights['adaface']`` twice (a fixed split),
    as :func:`write_run_config` writes ``adaface_schedule``.

    Args:
        cfg (Config): A resolved OAML config.

    Returns:
        tuple: ``(start, end)``, comparable with :func:`parse_split_schedule`.

    Raises:
        ConfigError: The config has neither such a hook nor
            ``model.loss_weights['adaface']`` (a damaged or foreign run config;
            names its file).
    """
    from oaml_mm.errors import ConfigError
    try:
        for hook in cfg.get('custom_hooks', None) or []:
            if hook['type'] == 'LossWeightScheduleHook' and \
                    hook.get('key', 'adaface') == 'adaface':
                # The hook's defaults (LossWeightScheduleHook).
                return (float(hook.get('start', 0.1)),
                        float(hook.get('end', 0.5)))
        start = float(cfg['model']['loss_weights']['adaface'])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ConfigError(
            f"{getattr(cfg, 'filename', None) or 'the config'}: no AdaFace "
            "loss split (a LossWeightScheduleHook or model.loss_weights"
            f"['adaface']) to read ({type(e).__name__}: {e}); not an OAML "
            'run config') from None
    return start, start


def _has_segmenter(cfg) -> bool:
    neck = cfg.model.get('neck')
    return bool(neck) and neck.get('type') == 'OcclusionSegmenter'


def reads_segmenter(model: str) -> bool:
    """Whether ``model``'s visibility predictor is a separately trained
    ``OcclusionSegmenter``, whose checkpoint each run must name
    (``write_run_config(segmenter=...)``).

    Raises:
        ValueError: ``model`` is not a key of :data:`CONFIGS`.
    """
    from oaml_mm.utils import load_config
    if model not in CONFIGS:
        raise ValueError(f'unknown SynthFace model {model!r}; one of '
                         f'{sorted(CONFIGS)}')
    return _has_segmenter(load_config(CONFIGS[model]))


def thread_env() -> Dict[str, str]:
    """Environment of a 1-thread worker process."""
    env = dict(os.environ)
    for key in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
        env[key] = '1'
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    return env


def train_command(config: str, work_dir: str) -> List[str]:
    return [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config,
            '--work-dir', work_dir]


def test_command(config: str, checkpoint: str, work_dir: str,
                 out: str) -> List[str]:
    return [sys.executable, osp.join(ROOT, 'tools', 'test.py'), config,
            checkpoint, '--work-dir', work_dir, '--out', out]


def train_progress(log_path: str) -> Optional[tuple]:
    """``(iteration, max_iters)`` of the last training log line, or None."""
    try:
        with open(log_path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 20000))
            tail = f.read().decode('utf-8', 'replace')
    except OSError:
        return None
    found = _ITER_RE.findall(tail)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


class JobError(RuntimeError):
    """A subprocess failed; the message names its log."""


def run_cli(main: Callable[[], object], prefix: str) -> None:
    """Run a study command's ``main``; a failed job or bad input (``JobError``,
    the package's ``OAMLError``: a missing or wrong ``--segmenter``, ...) ends it
    with one line starting with ``prefix`` instead of a traceback."""
    from oaml_mm.errors import OAMLError
    try:
        main()
    except JobError as e:
        raise SystemExit(f'{prefix} failed: {e}')
    except OAMLError as e:
        raise SystemExit(f'{prefix} {e}')


def run_jobs(jobs: Sequence[dict],
             max_parallel: int = 2,
             report: Optional[Callable[[List[dict]], None]] = None,
             interval: float = 10.0) -> None:
    """Run commands side by side, at most ``max_parallel`` at a time.

    Args:
        jobs (Sequence[dict]): Each ``{'name', 'cmd', 'log'}``; ``'status'``,
            ``'rc'``, ``'seconds'`` are filled in.
        max_parallel (int): Processes at once.
        report (callable, optional): Called with the job list every ``interval``
            seconds and at the end (progress display).
        interval (float): Seconds between reports.

    Raises:
        JobError: A job exited non-zero (after the others finished).
    """
    pending = list(jobs)
    running: List[tuple] = []
    for job in jobs:
        job['status'] = 'waiting'
    last = 0.0
    while pending or running:
        while pending and len(running) < max_parallel:
            job = pending.pop(0)
            os.makedirs(osp.dirname(job['log']) or '.', exist_ok=True)
            fh = open(job['log'], 'w')
            proc = subprocess.Popen(job['cmd'], stdout=fh,
                                    stderr=subprocess.STDOUT, env=thread_env(),
                                    cwd=ROOT)
            job['status'], job['start'] = 'running', time.time()
            running.append((job, proc, fh))
        for item in list(running):
            job, proc, fh = item
            rc = proc.poll()
            if rc is not None:
                fh.close()
                job['rc'] = rc
                job['seconds'] = time.time() - job['start']
                job['status'] = 'done' if rc == 0 else 'failed'
                running.remove(item)
        now = time.time()
        if report is not None and now - last >= interval:
            report(list(jobs))
            last = now
        if running:
            time.sleep(1.0)
    if report is not None:
        report(list(jobs))
    failed = [j for j in jobs if j['status'] == 'failed']
    if failed:
        raise JobError('; '.join(
            f"{j['name']} exited with {j['rc']} (log: {j['log']})"
            for j in failed))


def print_progress(jobs: List[dict]) -> None:
    """One status line per report: training iterations or elapsed time per job."""
    parts = []
    for job in jobs:
        if job['status'] == 'running':
            prog = train_progress(job['log'])
            elapsed = time.time() - job['start']
            if prog:
                parts.append(f"{job['name']} {prog[0]}/{prog[1]} it "
                             f'({elapsed:.0f} s)')
            else:
                parts.append(f"{job['name']} running ({elapsed:.0f} s)")
        elif job['status'] in ('done', 'failed'):
            parts.append(f"{job['name']} {job['status']} "
                         f"({job.get('seconds', 0):.0f} s)")
    if parts:
        print('  ' + ' | '.join(parts), flush=True)


def last_checkpoint(work_dir: str) -> str:
    """The checkpoint ``tools/train.py`` wrote last in ``work_dir``.

    As ``--resume`` finds it
    (:func:`oaml_mm.engine.runner.oaml_runner.find_resumable_checkpoint`): the
    file ``last_checkpoint`` names as it applies to this folder, if it verifies,
    else the verified ``iter_N``/``epoch_N`` saved at the latest training
    iteration; never the newest file by time (after ``cp -r`` that is copy
    order, and ``nonfinite_iter_N.pth`` is written after the last good one).
    """
    from oaml_mm.engine.runner.oaml_runner import find_resumable_checkpoint
    from oaml_mm.errors import OAMLError
    try:
        path, _ = find_resumable_checkpoint(work_dir)
    except OAMLError as e:  # none verifies: the demo's one-line failure
        raise JobError(str(e)) from None
    if path is None:
        raise JobError(f'{work_dir}: training wrote no checkpoint')
    return path


def read_metrics(path: str) -> Dict[str, float]:
    with open(path) as f:
        return json.load(f)


if __name__ == '__main__':
    # A library module: running it would do nothing and exit 0.
    print('projects.occlusion_study.synthface_runs is a library module with no '
          'command line; run tools/demo.py (the demo) or '
          'projects/occlusion_study/sweep_synthface.py / occlusion_study.py',
          file=sys.stderr)
    sys.exit(2)
