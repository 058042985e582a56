"""GPU readiness check: AMP training, one-process DDP, QAConv matching, IJB-C scale.

Run it first on any CUDA machine (``tools/misc/gpu_check.sh``, which calls this file)
and copy the figures into ``benchmarks/RESULTS.md`` (``docs/benchmarks.md``, "GPU
check"). Four steps, each timed on its own, each reported even when another fails:

1. ``train``: OAML IR-50 (``configs/_base_/models/oaml_ir50.py``), batch 128 (32
   identities x 4) plus an occlusion-stream batch of 128, fp16 AMP through
   ``GuardedAmpOptimWrapper`` (dynamic loss scale) and ``OAMLRecognizer.train_step``, a
   fixed number of iterations after a warm-up: images/s, peak GPU memory, final loss
   scale, non-finite skips;
2. ``ddp``: ``tools/dist_train.sh`` with one process (NCCL on CUDA) and ``--amp`` on
   a tiny generated SynthFace set: exit status, backend, iterations, wall time;
3. ``qaconv``: ``benchmarks/bench_qaconv.py`` on the device: ``QAConvHead.match``
   pairs/s against QAConv's reference evaluator, fp32 and fp16;
4. ``ijbc``: QAConv scores of an IJB-C-shaped pair list (15.7M pairs, 23,124
   templates of 512x7x7 fp16 maps, ``benchmarks/bench_ijbc_scale.py``'s ``cohort``
   structure) with ``score_pairs_tiled`` on the device: pairs/s and the time for all
   pairs.

``--dry-run`` runs the same four steps on the CPU with tiny sizes (IR-18 width 0.125,
batch 8, two iterations, bf16 autocast as ``tools/train.py --amp`` uses on a CPU)
so that CI checks the script itself. Results go to ``OUT/gpu_check.json`` and
``OUT/gpu_check.md``; the exit status is 1 when a step failed.

The steps live in ``benchmarks/gpu_check.py`` (:func:`run_check`); this file parses
the options (``gpu_check.sh`` puts the repository on ``PYTHONPATH``).

Usage:
    tools/misc/gpu_check.sh [--out work_dirs/gpu_check] [--iters 50]
    tools/misc/gpu_check.sh --dry-run --out /tmp/gpu_check
"""
import argparse
import sys

import torch

from benchmarks.gpu_check import STEPS, run_check


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', default='work_dirs/gpu_check',
                   help='folder for gpu_check.json / gpu_check.md')
    p.add_argument('--dry-run', action='store_true',
                   help='CPU, tiny sizes: checks the script, measures nothing')
    p.add_argument('--steps', nargs='+', choices=STEPS, default=list(STEPS))
    p.add_argument('--iters', type=int, default=None,
                   help='timed training iterations (default 50; dry run 2)')
    p.add_argument('--batch-size', type=int, default=None,
                   help='main batch (default 128; dry run 8), a multiple of 4')
    p.add_argument('--ddp-iters', type=int, default=None,
                   help='iterations of the DDP run (default 20; dry run 2)')
    p.add_argument('--ijbc-sample-rows', type=int, default=None,
                   help='time QAConv on the pairs of the first N enrolment '
                   'templates only and extrapolate (default: all pairs)')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print('gpu_check: no CUDA device (torch.cuda.is_available() is False); '
              'run with --dry-run to check the script on a CPU', file=sys.stderr)
        return 2
    if args.batch_size is not None and (args.batch_size < 8
                                        or args.batch_size % 4):
        print(f'gpu_check: --batch-size must be a multiple of 4 and >= 8, got '
              f'{args.batch_size}', file=sys.stderr)
        return 2
    path, steps = run_check(args.out, args.dry_run, args.steps, args.iters,
                            args.batch_size, args.ddp_iters,
                            args.ijbc_sample_rows)
    print(f'gpu_check: results in {path}')
    return 0 if all(s['status'] == 'ok' for s in steps.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
