"""Run the benchmark suite and write ``benchmarks/RESULTS.md`` (``make bench``).

Each benchmark module exposes ``run(quick) -> list[dict]`` rows ``{'name', 'value',
'unit', 'baseline_name', 'baseline_value', 'ratio'}`` (``ratio`` > 1 = better than the
baseline measured in the same run); ``aim``/``met`` where issue 7 sets an aim. This
script runs them in quick mode (the whole suite well under 15 minutes on a 2-core
CPU), adds the cross-benchmark figure "decode+augment images/s per worker against the
images/s the model consumes" and writes a Markdown report with the machine and
library versions.

Usage:
    python benchmarks/run_all.py                      # quick suite, CPU
    python benchmarks/run_all.py --full               # full sizes (long)
    python benchmarks/run_all.py --device cuda        # GPU figures (AMP / fp16)
    python benchmarks/run_all.py --only qaconv train_step --out /tmp/R.md
"""
import argparse
import datetime
import importlib
import math
import os
import os.path as osp
import platform
import sys
import time
import traceback
from typing import Callable, Dict, List

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from benchmarks.common import ROOT, make_row, setup_threads

#: name -> (module, takes a ``device`` argument)
SUITE = {
    'qaconv': ('benchmarks.bench_qaconv', True),
    'train_step': ('benchmarks.bench_train_step', True),
    'data': ('benchmarks.bench_data', False),
    'ijbc_scale': ('benchmarks.bench_ijbc_scale', False),
    'inference': ('benchmarks.bench_inference', True),
    'detect': ('benchmarks.bench_detect', True),
    'malloc': ('benchmarks.bench_malloc', False),
    'partial_fc': ('benchmarks.bench_partial_fc', False),
}


#: Figures of tools/misc/gpu_check.sh (docs/benchmarks.md, "GPU check"), listed as
#: not yet measured in a CPU run's report.
GPU_ROWS = (
    'train/images_per_s (OAML IR-50, batch 128 + 128, fp16 AMP)',
    'train/peak_memory (GiB)',
    'ddp/one_process_wall_time (tools/dist_train.sh, 1 process, NCCL)',
    'qaconv/qaconv_match/fp16/{novis,vis} (pairs/s vs reference evaluator)',
    'ijbc/qaconv_time_all_pairs (15.7M pairs, fp16, s)',
)


def machine_info(device: str) -> Dict[str, str]:
    """Machine and library versions for the report header."""
    import mmengine
    import numpy

    import oaml_mm
    info = {
        'date': datetime.datetime.now().strftime('%Y-%m-%d %H:%M'),
        'python': platform.python_version(),
        'platform': platform.platform(),
        'cpu': _cpu_name(),
        'cpu cores (os.cpu_count)': str(os.cpu_count()),
        'torch threads': str(torch.get_num_threads()),
        'load average at start': ' '.join(f'{x:.2f}' for x in os.getloadavg()),
        'torch': torch.__version__,
        'mmengine': mmengine.__version__,
        'numpy': numpy.__version__,
        'oaml_mm': oaml_mm.__version__,
        'device': device,
    }
    try:
        import mmpretrain
        info['mmpretrain'] = mmpretrain.__version__
    except ImportError:
        pass
    try:
        import onnxruntime
        info['onnxruntime'] = onnxruntime.__version__
    except ImportError:
        pass
    if device.startswith('cuda') and torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name(0)
    return info


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def _call(name: str, quick: bool, device: str) -> List[dict]:
    module, takes_device = SUITE[name]
    run: Callable = importlib.import_module(module).run
    if takes_device:
        return run(quick=quick, device=device)
    if device != 'cpu':
        return []  # CPU-only benchmarks are not repeated for a GPU run
    return run(quick=quick)


def data_feed_rows(results: Dict[str, List[dict]]) -> List[dict]:
    """Decode+augment images/s of one worker vs what the training step consumes."""
    aug = next((r for r in results.get('data', [])
                if r['name'] == 'rec_decode_augment'), None)
    use = next((r for r in results.get('train_step', [])
                if r['name'] == 'train_step/model_consumption'), None)
    if not aug or not use:
        return []
    per_worker = aug['value']
    # The main batch plus an equally large occlusion stream are decoded per step.
    need = 2 * use['value']
    workers = max(1, math.ceil(need / per_worker))
    return [make_row(
        'data/workers_to_feed_demo_model', per_worker, 'images/s/worker',
        'images/s the training step consumes (main + occlusion stream)', need,
        aim='1 worker keeps the demo model fed', met=per_worker >= need,
        note=f'workers needed: {workers} (IR-18 width 0.25 on this CPU); a '
        'GPU model consumes far more: workers = consumption / '
        f'{per_worker:.0f}')]


def _fmt(v) -> str:
    if v is None:
        return ''
    if isinstance(v, float):
        if v == 0 or 0.01 <= abs(v) < 1e5:
            return f'{v:.3g}' if abs(v) < 10 else f'{v:,.1f}'
        return f'{v:.3g}'
    return str(v)


def write_report(path: str, info: Dict[str, str],
                 results: Dict[str, List[dict]], errors: Dict[str, str],
                 seconds: Dict[str, float], quick: bool) -> None:
    lines = ['# Benchmark results', '',
             'Written by `make bench` (`benchmarks/run_all.py`); how to read it and '
             'what limits each figure: `docs/benchmarks.md`. Every ratio compares '
             'with a baseline measured in the same process (ratio > 1: better '
             'than the baseline); timings are medians of several repeats '
             f"({'quick' if quick else 'full'} mode).", '',
             '## Machine', '', '| | |', '|---|---|']
    lines += [f'| {k} | {v} |' for k, v in info.items()]
    if not info['device'].startswith('cuda'):
        lines += ['', '**GPU figures were not measured here** (no GPU on this '
                  'machine). `python benchmarks/run_all.py --device cuda` runs the '
                  'same suite with AMP / fp16 on a GPU.']
        lines += ['', '### GPU rows (`tools/misc/gpu_check.sh`)', '',
                  '| figure | value | |', '|---|---|---|']
        lines += [f'| {name} | | not yet measured |' for name in GPU_ROWS]
    lines += ['', '## Figures', '',
              '| benchmark | figure | value | unit | baseline | baseline value | '
              'ratio | aim | |', '|---|---|---|---|---|---|---|---|---|']
    for name, rows in results.items():
        for r in rows:
            status = '' if 'met' not in r else ('met' if r['met'] else 'MISSED')
            lines.append(
                f"| {name} | {r['name']} | {_fmt(r['value'])} | {r['unit']} | "
                f"{r.get('baseline_name') or ''} | "
                f"{_fmt(r.get('baseline_value'))} | {_fmt(r.get('ratio'))} | "
                f"{r.get('aim', '')} | {status} |")
    notes = [(name, r) for name, rows in results.items() for r in rows
             if r.get('note')]
    if notes:
        lines += ['', '## Notes per figure', '']
        lines += [f"- `{r['name']}`: {r['note']}" for _, r in notes]
    lines += ['', '## Run time', '']
    lines += [f'- {k}: {v:.0f} s' for k, v in seconds.items()]
    if errors:
        lines += ['', '## Failures', '']
        for k, v in errors.items():
            lines += [f'### {k}', '', '```', v.strip(), '```']
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.split('\n')[1:]))
    parser.add_argument('--full', action='store_true',
                        help='full sizes instead of quick mode')
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads (default 1: stabler on a shared CPU)')
    parser.add_argument('--only', nargs='+', choices=list(SUITE),
                        help='run only these benchmarks')
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks',
                                                  'RESULTS.md'),
                        help='report path')
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    info = machine_info(args.device)
    results, errors, seconds = {}, {}, {}
    t_all = time.perf_counter()
    for name in args.only or list(SUITE):
        print(f'== {name}', flush=True)
        t0 = time.perf_counter()
        try:
            results[name] = _call(name, not args.full, args.device)
            # Benchmarks may change the global thread count (bench_data does).
            setup_threads(args.threads)
        except Exception:  # a failing benchmark is reported, the suite goes on
            errors[name] = traceback.format_exc()
            print(errors[name], file=sys.stderr)
        seconds[name] = time.perf_counter() - t0
        for r in results.get(name, []):
            print(f"   {r['name']}: {_fmt(r['value'])} {r['unit']}"
                  + (f"  ratio {_fmt(r['ratio'])}" if r.get('ratio') else ''))
    feed = data_feed_rows(results)
    if feed:
        results['data_feed'] = feed
    seconds['total'] = time.perf_counter() - t_all
    write_report(args.out, info, results, errors, seconds, not args.full)
    print(f'wrote {args.out} ({seconds["total"]:.0f} s)')
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
