"""Does OAML's occlusion awareness generalise? The SynthFace study behind the table.

Trains every model of the study (:data:`synthface_runs.CONFIGS`:
the fair AdaFace baseline, the seed-style clean-only AdaFace, OAML, its
no-awareness control and the capability variants) at several budgets and seeds,
evaluates each with ``tools/test.py`` on the SynthFace verification sets (the
training occluders and the held-out occluders and faces) and the mini IJB-C, and
writes one table (this project's ``docs/occlusion_study.md`` shows the measured
one).

Layout: ``WORK/it{iters}/seed{seed}/{model}/`` per run (training log, checkpoint,
``test_bins.json`` / ``test_ijbc.json``). OAML models are evaluated from
``calibrated.pth``: the checkpoint with its thresholds and visibility fusion fitted
on the evaluated data's calibration split by ``tools/calibrate.py``. A run whose
checkpoint exists is not trained again, and a calibration or evaluation whose output
exists is not repeated, so an interrupted study resumes where it stopped. A trained
run whose AdaFace : QAConv split is not the asked one (``--adaface-schedule``, or the
config's) is refused rather than reused, by every stage that uses it (training,
calibration, evaluation; :func:`check_trained_split`).

Examples:
    # the whole study (about 3 CPU-hours on 2 cores)
    python -m projects.occlusion_study.occlusion_study --iters 500 1500 --seeds 0 1
    # the ablation of the capabilities at the demo budget
    python -m projects.occlusion_study.occlusion_study --iters 500 --seeds 0 1 \\
        --models oaml oaml_novis oaml_randocc oaml_visemb
    # OAML with a trained OcclusionSegmenter per seed (configs/synthface/
    # occlusion_segmenter_synthface.py), beside its baseline and control
    python -m projects.occlusion_study.occlusion_study --iters 500 --seeds 0 1 \\
        --models adaface oaml_novis oaml_seg \\
        --segmenter 0=work_dirs/seg/seed0/iter_800.pth \\
                    1=work_dirs/seg/seed1/iter_800.pth
    # or one pattern for every seed
    ... --segmenter 'work_dirs/seg/seed{seed}/iter_800.pth'
    # every OAML model of the run with another AdaFace : QAConv split schedule
    # (here a ramp 0.1 : 0.9 -> 0.5 : 0.5), e.g. a control matched to a schedule
    python -m projects.occlusion_study.occlusion_study --work-dir work_dirs/sched \
        --models oaml_novis --adaface-schedule 0.1:0.5
"""
import argparse
import functools
import glob
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

from projects.occlusion_study import synthface_runs as runs

DEFAULT_MODELS = ('adaface', 'adaface_cleanonly', 'oaml', 'oaml_novis')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data', default='data/synthface',
                   help='SynthFace folder for training (generated when missing)')
    p.add_argument('--test-data', default=None,
                   help='SynthFace folder evaluated (default: --data); it must '
                   'hold the held-out sets')
    p.add_argument('--work-dir', default='work_dirs/occlusion_study')
    p.add_argument('--models', nargs='+', default=list(DEFAULT_MODELS),
                   choices=sorted(runs.CONFIGS))
    p.add_argument('--iters', type=int, nargs='+', default=[500, 1500])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    p.add_argument('--jobs', type=int, default=2,
                   help='processes at once (each uses one thread)')
    p.add_argument('--stages', nargs='+', default=['train', 'test', 'report'],
                   choices=['train', 'test', 'report'])
    p.add_argument('--out', default=None,
                   help='markdown table (default: WORK_DIR/results.md)')
    p.add_argument('--adaface-schedule', default=None, metavar='W[:W1]',
                   help='AdaFace : QAConv split schedule of every OAML model: W '
                   '(fixed W : 1-W) or W0:W1 (a ramp over the run); default: '
                   'each config\'s')
    p.add_argument('--segmenter', nargs='+', default=[], metavar='SEED=PATH',
                   help='trained OcclusionSegmenter checkpoint of each seed for '
                   'the models that load one (oaml_seg): SEED=PATH items, or one '
                   'PATH with {seed} in it')
    args = p.parse_args(argv)
    args.segmenters = segmenter_checkpoints(args.segmenter, args.seeds)
    if args.adaface_schedule is not None:
        if not any(runs.FAMILY[m] == 'oaml' for m in args.models):
            p.error('--adaface-schedule sets the OAML loss split; --models '
                    f'{" ".join(args.models)} has no OAML model')
        try:
            runs.parse_split_schedule(args.adaface_schedule)
        except ValueError as e:
            p.error(f'--adaface-schedule: {e}')
    return args


def segmenter_checkpoints(specs: Sequence[str],
                          seeds: Sequence[int]) -> Dict[int, str]:
    """The segmenter checkpoint of each seed from ``--segmenter``.

    Args:
        specs (Sequence[str]): ``'SEED=PATH'`` items, or a single path pattern
            with ``{seed}`` in it (filled in for every seed of ``seeds``).
        seeds (Sequence[int]): The study's seeds.

    Returns:
        dict: seed -> absolute checkpoint path (empty without ``specs``).

    Raises:
        ConfigError: An item is neither form, a seed is named twice, or the
            pattern has a placeholder other than ``{seed}``.
    """
    from oaml_mm.errors import ConfigError
    if len(specs) == 1 and '{seed}' in specs[0]:
        try:
            return {int(s): osp.abspath(specs[0].format(seed=s))
                    for s in seeds}
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(
                f'--segmenter {specs[0]!r}: {{seed}} is the only placeholder '
                f'a path pattern may hold (cannot fill in: {e})') from None
    out: Dict[int, str] = {}
    for spec in specs:
        seed, sep, path = spec.partition('=')
        if not sep or not seed.strip().isdigit() or not path:
            raise ConfigError(f'--segmenter {spec!r}: expected SEED=PATH (e.g. '
                              f'0=work_dirs/seg/seed0/iter_800.pth) or one PATH '
                              f'with {{seed}} in it')
        if int(seed) in out:
            raise ConfigError(f'--segmenter: seed {int(seed)} is given twice '
                              f'({out[int(seed)]} and {path})')
        out[int(seed)] = osp.abspath(path)
    return out


def _segmenter(args, model: str, seed: int) -> Optional[str]:
    """The checkpoint ``model`` loads in ``seed``'s run (None: it loads none).

    Raises:
        ConfigError: ``model`` loads a segmenter and ``--segmenter`` names none
            for ``seed``.
        MissingFileError: The named checkpoint does not exist.
        DataFormatError: It is a directory, not a checkpoint, or holds no
            ``segmenter.`` weights (e.g. a recognizer's checkpoint).
    """
    from oaml_mm.errors import ConfigError, MissingFileError
    if not runs.reads_segmenter(model):
        return None
    path = getattr(args, 'segmenters', {}).get(seed)
    if path is None:
        raise ConfigError(f'{model} (seed {seed}) loads a trained '
                          f'OcclusionSegmenter: give its checkpoint with '
                          f'--segmenter {seed}=PATH')
    if not osp.isfile(path) and not osp.isdir(path):
        raise MissingFileError(path, f'the --segmenter checkpoint of seed {seed}')
    check_segmenter_checkpoint(path, seed)
    return path


@functools.lru_cache(maxsize=None)
def check_segmenter_checkpoint(path: str, seed: int) -> None:
    """Check before any run starts that ``path`` holds a trained segmenter.

    The ``oaml_seg`` model loads the ``segmenter.``-prefixed weights of the
    checkpoint; without them its training fails minutes later inside
    ``train.log``. Only the state dict's keys are read (memory-mapped).

    Args:
        path (str): The ``--segmenter`` checkpoint of ``seed``.
        seed (int): Its seed (named in the message).

    Raises:
        DataFormatError: ``path`` is a directory, not a readable checkpoint, or
            has no ``segmenter.`` weights.
    """
    import pickle

    from oaml_mm.errors import DataFormatError, OAMLError
    from oaml_mm.utils.checkpoint import safe_load_checkpoint
    what = f'--segmenter checkpoint of seed {seed}'
    if osp.isdir(path):
        raise DataFormatError(path, f'the {what} is a directory; expected '
                              f'a checkpoint file (e.g. iter_800.pth)')
    try:
        ckpt = safe_load_checkpoint(path, decode=False, mmap=True)
    except (OAMLError, pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise DataFormatError(path, f'the {what} is not a readable '
                              f'checkpoint ({str(e).splitlines()[0]})') from None
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else {}
    if not any(str(k).startswith('segmenter.') for k in state):
        raise DataFormatError(
            path, f'the {what} holds no "segmenter." weights; expected the '
            f'checkpoint of a trained OcclusionSegmenter '
            f'(configs/synthface/occlusion_segmenter_synthface.py), not of a '
            f'recognizer')


def run_dir(work_dir: str, iters: int, seed: int, model: str) -> str:
    return osp.join(work_dir, f'it{iters}', f'seed{seed}', model)


def _trained(wd: str, iters: int) -> bool:
    return osp.isfile(osp.join(wd, f'iter_{iters}.pth'))


def _trained_any(wd: str) -> bool:
    """Whether ``wd`` holds a checkpoint of any budget (``iter_N.pth``)."""
    return bool(glob.glob(osp.join(glob.escape(wd), 'iter_*.pth')))


def _training_elsewhere(wd: str) -> bool:
    """Whether another process trains in ``wd`` now (it holds the work-dir lock)."""
    from oaml_mm.engine.runner.work_dir_lock import WorkDirLock
    from oaml_mm.errors import WorkDirError
    if not osp.isdir(wd):
        return False
    lock = WorkDirLock(wd)
    try:
        lock.acquire()
    except WorkDirError:
        return True
    lock.release()
    return False


def train_jobs(args) -> List[dict]:
    jobs = []
    for iters in args.iters:
        for seed in args.seeds:
            for model in args.models:
                wd = run_dir(args.work_dir, iters, seed, model)
                if _trained(wd, iters) or _training_elsewhere(wd):
                    check_trained_split(wd, model, _split(args, model))
                    continue
                cfg = runs.write_run_config(
                    model, wd, args.data, iters, seed=seed,
                    segmenter=_segmenter(args, model, seed),
                    adaface_schedule=_split(args, model))
                jobs.append(dict(name=f'{model} it{iters} s{seed}',
                                 cmd=runs.train_command(cfg, wd),
                                 log=osp.join(wd, 'train.log')))
    return jobs


def check_trained_split(wd: str, model: str, schedule: Optional[str]) -> None:
    """Refuse to reuse a run of ``wd`` trained with another AdaFace split.

    The run folder does not name the split, so a study repeated with another
    ``--adaface-schedule`` (or without one) in the same ``--work-dir`` would
    otherwise report the runs it finds as trained with the asked split. The
    split is read from the run config ``write_run_config`` left in ``wd``
    (training reads it, so every run trained here has one); a model of the
    AdaFace family is not checked.

    Args:
        wd (str): The run folder.
        model (str): A key of :data:`~projects.occlusion_study.synthface_runs.CONFIGS`.
        schedule (str, optional): The asked ``--adaface-schedule``; None: the
            model config's split.

    Raises:
        ConfigError: The run config's split differs from the asked one (both
            named, with the folder), or a trained run has no run config (a
            folder copied in without it: its split cannot be told).
    """
    from oaml_mm.errors import ConfigError
    from oaml_mm.utils import load_config
    name = osp.splitext(osp.basename(runs.CONFIGS[model]))[0]
    written = osp.join(wd, f'{name}_run.py')
    if runs.FAMILY[model] != 'oaml':
        return
    if not osp.isfile(written):
        if not _trained_any(wd):
            return
        raise ConfigError(
            f'{wd} holds a trained run without its run config {written}: '
            'the AdaFace : QAConv split it was trained with cannot be told. '
            'Restore the file, or use another --work-dir')
    have = runs.config_split(load_config(written))
    want = (runs.parse_split_schedule(schedule) if schedule is not None else
            runs.config_split(load_config(runs.CONFIGS[model])))
    if any(abs(a - b) > 1e-9 for a, b in zip(have, want)):
        def tag(split):
            return runs.split_schedule_tag(':'.join(f'{w:g}' for w in split))
        raise ConfigError(
            f'{wd} holds a run trained with the AdaFace : QAConv split '
            f'{tag(have)} ({written}); this study asks for {tag(want)}. Use '
            'another --work-dir for another split')


def _split(args, model: str) -> Optional[str]:
    """``--adaface-schedule`` for OAML models; None (the config's) otherwise."""
    if runs.FAMILY[model] != 'oaml':
        return None
    return getattr(args, 'adaface_schedule', None)


def _calibrated(wd: str) -> str:
    return osp.join(wd, 'calibrated.pth')


def calibrate_jobs(args) -> List[dict]:
    """Re-fit every trained OAML model's thresholds and visibility fusion on the
    calibration split of the evaluated data (``val/calib.bin``), so that no figure
    depends on where a run happened to be calibrated when it was trained."""
    jobs = []
    for iters in args.iters:
        for seed in args.seeds:
            for model in args.models:
                wd = run_dir(args.work_dir, iters, seed, model)
                if runs.FAMILY[model] != 'oaml' or not _trained(wd, iters) or \
                        osp.isfile(_calibrated(wd)):
                    continue
                check_trained_split(wd, model, _split(args, model))
                cd = osp.join(wd, 'calibrate')
                cfg = runs.write_run_config(
                    model, cd, args.test_data, iters, seed=seed,
                    segmenter=_segmenter(args, model, seed))
                jobs.append(dict(
                    name=f'calibrate {model} it{iters} s{seed}',
                    cmd=[sys.executable, osp.join(runs.ROOT, 'tools',
                                                  'calibrate.py'), cfg,
                         osp.join(wd, f'iter_{iters}.pth'), '--out',
                         _calibrated(wd), '--work-dir', cd],
                    log=osp.join(wd, 'calibrate.log')))
    return jobs


def test_jobs(args) -> List[dict]:
    """``tools/test.py`` on the ``.bin`` sets and the mini IJB-C of every trained
    run (OAML models: their recalibrated checkpoint)."""
    jobs = []
    for iters in args.iters:
        for seed in args.seeds:
            for model in args.models:
                wd = run_dir(args.work_dir, iters, seed, model)
                if not _trained(wd, iters):
                    continue
                # --stages test alone would otherwise evaluate (and the report
                # present) a run of another split as the asked one.
                check_trained_split(wd, model, _split(args, model))
                ckpt = osp.join(wd, f'iter_{iters}.pth')
                if runs.FAMILY[model] == 'oaml':
                    if not osp.isfile(_calibrated(wd)):
                        continue
                    ckpt = _calibrated(wd)
                for part, ijbc in (('bins', False), ('ijbc', True)):
                    out = osp.join(wd, f'test_{part}.json')
                    if osp.isfile(out):
                        continue
                    td = osp.join(wd, f'test_{part}')
                    cfg = runs.write_run_config(
                        model, td, args.data, iters, seed=seed,
                        test_data_root=args.test_data, ijbc=ijbc,
                        segmenter=_segmenter(args, model, seed))
                    jobs.append(dict(
                        name=f'test {model} {part} it{iters} s{seed}',
                        cmd=runs.test_command(cfg, ckpt, td, out),
                        log=osp.join(wd, f'test_{part}.log')))
    return jobs


def main(argv=None):
    args = parse_args(argv)
    args.data = osp.abspath(args.data)
    args.test_data = osp.abspath(args.test_data or args.data)
    args.work_dir = osp.abspath(args.work_dir)
    if 'train' in args.stages:
        from oaml_mm.synthface import SynthFaceConfig, generate_synthface
        from oaml_mm.synthface.writer import read_manifest
        if read_manifest(args.data) is None:
            generate_synthface(args.data, SynthFaceConfig())
        # An existing folder is never rewritten here: trainings of another
        # invocation may be reading it.
        jobs = train_jobs(args)
        print(f'[study] training {len(jobs)} models', flush=True)
        runs.run_jobs(jobs, max_parallel=args.jobs,
                      report=runs.print_progress, interval=60)
    if 'test' in args.stages:
        for what, make in (('calibrations', calibrate_jobs),
                           ('evaluations', test_jobs)):
            jobs = make(args)
            print(f'[study] {len(jobs)} {what}', flush=True)
            runs.run_jobs(jobs, max_parallel=args.jobs,
                          report=runs.print_progress, interval=60)
    if 'report' in args.stages:
        from projects.occlusion_study import occlusion_study_report as report
        table = report.study_table(args.work_dir, args.models, args.iters,
                                   args.seeds)
        out = args.out or osp.join(args.work_dir, 'results.md')
        os.makedirs(osp.dirname(out) or '.', exist_ok=True)
        with open(out, 'w') as f:
            f.write(table + '\n')
        print(table)


if __name__ == '__main__':
    runs.run_cli(main, '[study]')
