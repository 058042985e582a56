"""Allocator benchmark: glibc's default malloc thresholds against the tools' settings.

PyTorch's CPU allocator takes every tensor from ``malloc`` and gives it back on
release (no caching on the CPU). glibc serves blocks above ``M_MMAP_THRESHOLD``
(128 KiB, rising to at most 32 MiB as blocks are freed) with a fresh ``mmap`` and
returns them with ``munmap``, and trims the heap top above ``M_TRIM_THRESHOLD``: a
training step's activations (tens of MiB each) are mapped, page-faulted in 4 KiB at a
time, zeroed by the kernel and unmapped again at every iteration. The tools therefore
start Python with ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` raised
(``oaml_mm/utils/malloc_tuning.py``): freed blocks stay in the heap and are reused.

Each side runs in its own child process (the variables are read once, at start-up),
the two alternating; the same workload both times:

* ``train``: OAML iterations of the SynthFace demo model (IR-18 width 0.25, 128-d,
  PK batch 32 + occlusion batch 16, SGD) through ``OAMLRecognizer.train_step``;
* ``eval``: ``OAMLRecognizer.extract`` over 512 images at batch 128 plus a QAConv
  ``match`` of the maps (what the verification metrics do).

Reported per figure: tuned against default (ratio > 1 = faster), the minor page faults
and system time of the children, peak RSS of both, and whether the losses, embeddings
and scores are bit-identical (they must be: the setting changes where memory comes
from, not what is computed).

Usage:
    python benchmarks/bench_malloc.py --quick
    python benchmarks/bench_malloc.py --child train     # one side, JSON on stdout
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

try:
    from benchmarks.common import add_common_args, make_row, print_rows
except ImportError:  # run as a script
    from common import add_common_args, make_row, print_rows

WORKLOADS = ('train', 'eval')


def _model():
    import torch

    import oaml_mm  # noqa: F401
    from oaml_mm.registry import MODELS
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='OAMLRecognizer',
        backbone=dict(type='IResNet', depth=18, width_mult=0.25,
                      embedding_size=128),
        neck=dict(type='OcclusionHead', in_channels=128, hidden_channels=32),
        head=dict(type='AdaFaceHead', in_channels=128, num_classes=64),
        qaconv_head=dict(type='QAConvHead', in_channels=128)))


def child(workloads, iters: int) -> Dict[str, dict]:
    """Run the workloads in this process, in order; their figures by name."""
    return {w: _workload(w, iters) for w in workloads}


def _workload(workload: str, iters: int) -> dict:
    """Run one workload; return wall / CPU time, faults, peak RSS and a digest."""
    import torch
    from mmengine.logging import MessageHub
    from mmengine.optim import OptimWrapper
    from mmpretrain.structures import DataSample
    torch.set_num_threads(1)
    MessageHub.get_instance('bench_malloc')
    model = _model()
    g = torch.Generator().manual_seed(0)
    digest = hashlib.sha256()
    if workload == 'train':
        model.train()
        optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01,
                                             momentum=0.9))

        def batch(it):
            imgs = torch.randint(0, 256, (32, 3, 112, 112), dtype=torch.uint8,
                                 generator=g)
            occ = []
            for i in range(16):
                vis = torch.ones(1, 7, 7)
                vis[:, 4 + i % 3:] = 0
                sample = DataSample()
                sample.set_field(vis, 'gt_visibility')
                occ.append(sample)
            return dict(inputs=list(imgs), data_samples=[
                DataSample().set_gt_label((it * 8 + i // 4) % 64)
                for i in range(32)], occlusion=dict(inputs=list(imgs[:16]),
                                                    data_samples=occ))

        batches = [batch(it) for it in range(iters + 1)]
        model.train_step(batches[0], optim)  # warm-up, not timed
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for b in batches[1:]:
            log = model.train_step(b, optim)
            digest.update(log['loss'].detach().numpy().tobytes())
        units = iters
    else:
        model.eval()
        imgs = torch.randint(0, 256, (512, 3, 112, 112), dtype=torch.uint8,
                             generator=g)
        data = model.data_preprocessor(dict(inputs=list(imgs)), False)['inputs']
        with torch.no_grad():
            model.extract(data[:128])  # warm-up, not timed
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            embs, maps = [], []
            for s in range(0, 512, 128):
                out = model.extract(data[s:s + 128], return_feature_maps=True)
                embs.append(out['embedding'])
                maps.append(out['feature_map'])
            maps = torch.cat(maps)
            scores = model.match(maps[:128], maps)
        digest.update(torch.cat(embs).numpy().tobytes())
        digest.update(scores.numpy().tobytes())
        units = 512
    seconds = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return dict(workload=workload, seconds=seconds, units=units,
                minflt=r1.ru_minflt - r0.ru_minflt, stime=r1.ru_stime - r0.ru_stime,
                utime=r1.ru_utime - r0.ru_utime, maxrss_mib=r1.ru_maxrss / 1024,
                digest=digest.hexdigest(),
                env={k: os.environ.get(k) for k in _tuned_env()})


def _tuned_env() -> Dict[str, str]:
    sys.path.insert(0, osp.join(ROOT, 'oaml_mm', 'utils'))
    try:
        import malloc_tuning  # stdlib-only; avoids importing the package here
    finally:
        sys.path.pop(0)
    return dict(malloc_tuning.MALLOC_ENV)


def _spawn(workloads, iters: int, tuned: bool) -> Dict[str, dict]:
    env = dict(os.environ)
    for key in _tuned_env():
        env.pop(key, None)
    if tuned:
        env.update(_tuned_env())
    env['OAML_MALLOC_TUNING'] = '0'  # the child must keep exactly this env
    env['OMP_NUM_THREADS'] = '1'
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    proc = subprocess.run(
        [sys.executable, osp.abspath(__file__), '--iters', str(iters),
         '--child'] + list(workloads), env=env, capture_output=True, text=True,
        check=False)
    if proc.returncode != 0:
        raise RuntimeError(f'bench_malloc child (tuned={tuned}) failed:\n'
                           f'{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False, repeats: Optional[int] = None,
        iters: Optional[int] = None,
        workloads=WORKLOADS) -> List[dict]:
    """Run both sides of each workload ``repeats`` times, alternating.

    Args:
        quick (bool): 2 repeats and 4 training iterations (else 3 and 10).
        repeats (int, optional): Child runs per side.
        iters (int, optional): Timed training iterations per child.
        workloads (Sequence[str]): ``'train'`` and/or ``'eval'``.

    Returns:
        list[dict]: Rows (``ratio`` > 1: the tuned side is faster / smaller).

    Raises:
        RuntimeError: A child failed, or the two sides computed different results.
    """
    repeats = repeats or (2 if quick else 3)
    iters = iters or (4 if quick else 10)
    res = {False: [], True: []}
    for _ in range(repeats):
        for tuned in (False, True):
            res[tuned].append(_spawn(workloads, iters, tuned))
    rows = []
    for workload in workloads:
        runs = {t: [r[workload] for r in res[t]] for t in res}
        digests = {r['digest'] for side in runs.values() for r in side}
        if len(digests) != 1:
            raise RuntimeError(f'bench_malloc: {workload} results differ between '
                               f'the allocator settings: {sorted(digests)}')

        def med(tuned, key):
            if key == 'cpu':
                return statistics.median(r['utime'] + r['stime']
                                         for r in runs[tuned])
            return statistics.median(r[key] for r in runs[tuned])

        units = runs[True][0]['units']
        what = (f'OAML IR-18 w0.25 train_step, batch 32 + 16, {units} iterations'
                if workload == 'train' else
                'extract 512 images at batch 128 + QAConv 128 x 512')
        note = (f'{what}; {repeats} child runs per side, alternating; results '
                f'bit-identical; minor faults {med(False, "minflt"):,.0f} -> '
                f'{med(True, "minflt"):,.0f}, system time '
                f'{med(False, "stime"):.2f} -> {med(True, "stime"):.2f} s, user '
                f'{med(False, "utime"):.2f} -> {med(True, "utime"):.2f} s')
        unit = 'ms/iter' if workload == 'train' else 'ms/image'
        base = 'glibc default thresholds, same children'
        # CPU time (user + system) is the robust figure on a shared machine: other
        # processes stretch the wall time of both sides but not their CPU time.
        rows.append(make_row(
            f'malloc/{workload} CPU {unit} (tuned thresholds)',
            1000 * med(True, 'cpu') / units, f'CPU {unit}', base,
            1000 * med(False, 'cpu') / units, higher_is_better=False, note=note))
        rows.append(make_row(
            f'malloc/{workload} wall {unit} (tuned thresholds)',
            1000 * med(True, 'seconds') / units, unit, base,
            1000 * med(False, 'seconds') / units, higher_is_better=False))
        rows.append(make_row(
            f'malloc/{workload} minor page faults (tuned thresholds)',
            med(True, 'minflt'), 'faults', base, med(False, 'minflt'),
            higher_is_better=False))
    rows.append(make_row(
        'malloc/peak RSS (tuned thresholds)',
        statistics.median(r[workloads[-1]]['maxrss_mib'] for r in res[True]),
        'MiB', 'glibc default thresholds',
        statistics.median(r[workloads[-1]]['maxrss_mib'] for r in res[False]),
        higher_is_better=False,
        note='whole child process after all workloads (imports included)'))
    return rows


def main(argv=None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_common_args(parser)
    parser.add_argument('--child', nargs='+', choices=WORKLOADS,
                        help='run workloads in this process, print JSON')
    parser.add_argument('--iters', type=int, default=None)
    parser.add_argument('--workloads', nargs='+', choices=WORKLOADS,
                        default=list(WORKLOADS))
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.iters or 4)))
        return []
    rows = run(args.quick, args.repeats, args.iters, args.workloads)
    print_rows(rows)
    return rows


if __name__ == '__main__':
    main()
