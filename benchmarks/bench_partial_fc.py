"""Partial FC against the replicated margin head: per-rank memory and head step time.

Two gloo CPU processes (the DDP setting of ``tools/dist_train.sh`` on a CPU machine),
each with a batch of ``--batch`` 512-d embeddings (the backbone's output, as leaf
tensors) and random labels over ``C`` identities. One *head step* is what the head
costs a training step: margin logits, cross-entropy, backward to the embeddings and
the centres, the centres' gradient all-reduce (replicated head only: DDP averages it;
the sharded head's centres are not synchronised), and an SGD update (momentum 0.9,
weight decay 5e-4) of the centres.

* ``replicated``: :class:`~oaml_mm.models.heads.AdaFaceHead` with all ``C`` centres
  on every rank, the loss on the rank's batch;
* ``pfc``: :class:`~oaml_mm.models.heads.PartialFCHead` wrapping the same AdaFace
  margin, ``C / 2`` centres per rank, at ``sample_rate`` 1.0 and 0.1.

Each case runs in a fresh pair of processes; the figure per case is the median step
time over the timed repeats (the slower rank) and the larger rank's peak RSS growth
over the step (weights, gradients, momentum, activations). A case whose estimated
memory for both processes together, times a safety factor of 1.5, exceeds
``--max-gb`` or what the machine has available is not run and is reported as
skipped, so the benchmark does not exhaust a shared machine. Ratios are against the
replicated head measured in the same run, or, where it was skipped, against its step
time extrapolated linearly in ``C`` from the two largest sizes it ran at (marked
so). Run it with the tools' malloc thresholds (``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` = 1 GiB, as ``tools/dist_train.sh`` sets them).

Usage::

    python benchmarks/bench_partial_fc.py                 # 10k, 100k, 1M, 2M
    python benchmarks/bench_partial_fc.py --quick         # 10k, 100k
"""
import argparse
import json
import os
import os.path as osp
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import torch

try:
    from benchmarks.common import (add_common_args, make_row,
                                   peak_rss_delta_mib, peak_rss_reset,
                                   print_rows, setup_threads)
except ImportError:  # run as a script
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    from common import (add_common_args, make_row, peak_rss_delta_mib,
                        peak_rss_reset, print_rows, setup_threads)

WORLD = 2
FULL_SIZES = (10_000, 100_000, 1_000_000, 2_000_000)
QUICK_SIZES = (10_000, 100_000)
#: Measured peak RSS reached 1.3x the estimate at 1M identities (2x on small cases,
#: allocator overhead): a case runs only if this many estimates fit.
SAFETY = 1.5
MODES = (('replicated', 1.0), ('pfc', 1.0), ('pfc', 0.1))
GIB = 1 << 30


def estimate_bytes(mode: str, classes: int, rate: float, batch: int,
                   dim: int, world: int = WORLD) -> int:
    """Peak bytes of one rank's head step (fp32), from the tensors it holds.

    Replicated: centres, their gradient, momentum, the normalised copy and its
    backward (5 copies of ``[D, C]``) and about six ``[B, C]`` logit-sized buffers.
    Sharded: at the SGD step 4 copies of the shard (weights, dense gradient,
    momentum, and the gradient plus weight decay that ``torch.optim.SGD``
    allocates), 5 when every column is scored (normalised copy and its backward),
    the scored columns' copies and six ``[N, S]`` buffers, N = world * B.
    """
    if mode == 'replicated':
        return 4 * (5 * dim * classes + 6 * batch * classes)
    shard = -(-classes // world)
    scored = shard if rate >= 1 else int(rate * shard) + world * batch
    copies = 5 if rate >= 1 else 4
    extra = 0 if rate >= 1 else 4 * dim * scored + shard
    return 4 * (copies * dim * shard + extra + 6 * world * batch * scored)


def _available_bytes() -> int:
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def _worker(rank: int, spec: dict, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    torch.set_num_threads(spec['threads'])
    try:  # on a shared machine, the kernel kills this process first
        with open('/proc/self/oom_score_adj', 'w') as f:
            f.write('1000')
    except OSError:
        pass
    dist.init_process_group('gloo', init_method=f'file://{init_file}',
                            rank=rank, world_size=WORLD)
    try:
        from oaml_mm.models.heads import AdaFaceHead, PartialFCHead
        classes, dim, batch = spec['classes'], spec['dim'], spec['batch']
        gen = torch.Generator().manual_seed(rank)
        emb = torch.randn(batch, dim, generator=gen)
        norms = emb.norm(dim=1, keepdim=True)
        start_kib = peak_rss_reset()
        margin = dict(type='AdaFaceHead', s=64.0)
        if spec['mode'] == 'replicated':
            head = AdaFaceHead(in_channels=dim, num_classes=classes)
        else:
            head = PartialFCHead(in_channels=dim, num_classes=classes,
                                 sample_rate=spec['rate'], margin_head=margin)
        head.train()
        opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9,
                              weight_decay=5e-4)

        def step(i: int) -> None:
            labels = torch.randint(0, classes, (batch, ),
                                   generator=torch.Generator().manual_seed(
                                       1000 * i + rank))
            e = emb.clone().requires_grad_(True)
            out = head.loss(e, norms, labels)
            opt.zero_grad()
            out['loss'].backward()
            if spec['mode'] == 'replicated':
                dist.all_reduce(head.kernel.grad)  # what DDP does with it
                head.kernel.grad.div_(WORLD)
            opt.step()

        step(0)  # warm-up: momentum allocated, pages touched
        times = []
        for i in range(spec['repeats']):
            dist.barrier()
            t0 = time.perf_counter()
            step(i + 1)
            dist.barrier()
            times.append(time.perf_counter() - t0)
        result = dict(seconds=statistics.median(times),
                      peak_mib=peak_rss_delta_mib(start_kib))
        with open(osp.join(out_dir, f'{rank}.json'), 'w') as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def measure(mode: str, classes: int, rate: float, batch: int, dim: int,
            repeats: int, threads: int = 1) -> dict:
    """Run one case on 2 fresh processes: median step seconds, peak MiB per rank."""
    import torch.multiprocessing as mp
    spec = dict(mode=mode, classes=classes, rate=rate, batch=batch, dim=dim,
                repeats=repeats, threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_worker,
                           args=(spec, osp.join(tmp, 'init'), tmp),
                           nprocs=WORLD, start_method='fork')
        ranks = []
        for r in range(WORLD):
            with open(osp.join(tmp, f'{r}.json')) as f:
                ranks.append(json.load(f))
    return dict(seconds=max(r['seconds'] for r in ranks),
                peak_mib=max(r['peak_mib'] for r in ranks))


def _label(mode: str, rate: float) -> str:
    return 'replicated' if mode == 'replicated' else f'pfc@{rate:g}'


def run(quick: bool = False, repeats: Optional[int] = None,
        sizes: Optional[Sequence[int]] = None, batch: int = 64, dim: int = 512,
        max_gb: float = 13.0, threads: int = 1, safety: float = SAFETY,
        log=print) -> List[dict]:
    """Measure every (size, head) case that fits; rows for RESULTS.md.

    Args:
        quick (bool): Sizes 10k and 100k, 2 repeats (else 10k..2M, 3 repeats).
        repeats (int, optional): Timed steps per case.
        sizes (sequence of int, optional): Identity counts to report.
        batch (int): Embeddings per rank.
        dim (int): Embedding size.
        max_gb (float): Largest estimated memory of one case, both processes
            together, that is run.
        threads (int): torch threads per process.
        safety (float): A case runs if ``safety`` times its estimate fits.
        log (callable): Progress lines.

    Returns:
        list[dict]: Rows (see ``benchmarks/common.make_row``).
    """
    import oaml_mm.models.heads  # noqa: F401  (imported once, before forking)
    sizes = tuple(sizes or (QUICK_SIZES if quick else FULL_SIZES))
    repeats = repeats or (2 if quick else 3)
    cases = [(m, c, r) for c in sizes for m, r in MODES]
    results: Dict[tuple, dict] = {}
    for mode, classes, rate in cases:
        need = WORLD * estimate_bytes(mode, classes, rate, batch, dim)
        avail = _available_bytes()
        key = (mode, classes, rate)
        limit = min(max_gb * GIB, avail - GIB)
        if need * safety > limit:
            results[key] = dict(skipped=(
                f'estimated {need / GIB:.1f} GiB for 2 processes, x{safety:g} '
                f'> {limit / GIB:.1f} GiB (limit or available)'))
            log(f'{_label(mode, rate)} C={classes}: skipped '
                f"({results[key]['skipped']})")
            continue
        try:
            res = measure(mode, classes, rate, batch, dim, repeats, threads)
        except Exception as e:  # noqa: BLE001  (a killed worker: report it)
            results[key] = dict(skipped=f'failed: {type(e).__name__}: {e}')
            log(f'{_label(mode, rate)} C={classes}: failed ({e})')
            continue
        res['estimate_mib'] = need / WORLD / (1 << 20)
        results[key] = res
        log(f"{_label(mode, rate)} C={classes}: {res['seconds'] * 1e3:.1f} "
            f"ms/step, peak {res['peak_mib']:.0f} MiB/rank (estimate "
            f"{res['estimate_mib']:.0f})")
    return rows_from(results, sizes, batch, dim)


def _replicated_seconds(results: Dict[tuple, dict], classes: int):
    """Measured, or extrapolated linearly from the two largest measured sizes."""
    own = results.get(('replicated', classes, 1.0), {})
    if 'seconds' in own:
        return own['seconds'], False
    pts = sorted((c, r['seconds']) for (m, c, _), r in results.items()
                 if m == 'replicated' and 'seconds' in r)
    if len(pts) < 2:
        return None, False
    (c0, t0), (c1, t1) = pts[-2], pts[-1]
    return t0 + (t1 - t0) * (classes - c0) / (c1 - c0), True


def rows_from(results: Dict[tuple, dict], sizes: Sequence[int], batch: int,
              dim: int) -> List[dict]:
    """Result rows: step time and per-rank memory of each case, ratios against
    the replicated head, and the aims at 1M (``sample_rate=0.1``) and 2M."""
    rows = []
    for classes in sizes:
        tag = f'{classes // 1000}k' if classes < 10**6 else \
            f'{classes / 10**6:g}M'
        rep = results.get(('replicated', classes, 1.0), {})
        base_t, extrapolated = _replicated_seconds(results, classes)
        rep_mib = rep.get('peak_mib')
        rep_est_mib = estimate_bytes('replicated', classes, 1.0, batch,
                                     dim) / (1 << 20)
        for mode, rate in MODES:
            res = results.get((mode, classes, rate), {})
            name = f'partial_fc/{tag} {_label(mode, rate)}'
            if 'seconds' not in res:
                rows.append(make_row(f'{name} step', float('nan'), 'ms',
                                     note='not run: ' + res.get(
                                         'skipped', 'no result')))
                continue
            ms = res['seconds'] * 1e3
            if mode == 'replicated':
                rows.append(make_row(f'{name} step', ms, 'ms'))
                rows.append(make_row(f'{name} peak memory/rank',
                                     res['peak_mib'], 'MiB'))
                continue
            aim = met = None
            note = ''
            if extrapolated:
                note = 'replicated time extrapolated linearly in C'
            if classes == 10**6 and rate == 0.1 and base_t:
                aim, met = '>= 5x faster', base_t / res['seconds'] >= 5
            rows.append(make_row(
                f'{name} step', ms, 'ms', 'replicated step',
                base_t * 1e3 if base_t else None, higher_is_better=False,
                aim=aim, met=met, note=note))
            base_m = rep_mib if rep_mib else rep_est_mib
            mem_note = '' if rep_mib else 'replicated memory: estimate'
            aim = met = None
            if classes == 10**6 and rate == 0.1:
                scored = int(rate * -(-classes // WORLD)) + WORLD * batch
                logits_mib = 4 * 6 * WORLD * batch * scored / (1 << 20)
                aim = '<= replicated/world + sampled logits'
                met = res['peak_mib'] <= base_m / WORLD + logits_mib
            if classes >= 2 * 10**6:
                aim, met = 'trains on 2 processes', True
            rows.append(make_row(
                f'{name} peak memory/rank', res['peak_mib'], 'MiB',
                'replicated peak memory/rank', base_m, higher_is_better=False,
                aim=aim, met=met, note=mem_note))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_common_args(parser)
    parser.add_argument('--sizes', type=int, nargs='+', default=None,
                        help='identity counts (default 10k 100k 1M 2M)')
    parser.add_argument('--batch', type=int, default=64,
                        help='embeddings per rank (default 64)')
    parser.add_argument('--dim', type=int, default=512)
    parser.add_argument('--max-gb', type=float, default=13.0,
                        help='skip cases estimated above this, both processes')
    parser.add_argument('--safety', type=float, default=SAFETY,
                        help='run a case if this many estimates fit')
    parser.add_argument('--json', default=None, help='also write rows here')
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    rows = run(args.quick, args.repeats, args.sizes, args.batch, args.dim,
               args.max_gb, threads=args.threads or 1, safety=args.safety)
    print_rows(rows)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
