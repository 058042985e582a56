"""Helpers shared by the benchmark scripts: interleaved timing, result rows, devices.

Every figure is a ratio against a baseline measured in the same process, because the
machines this runs on are shared: both sides are timed in alternation, ``repeats``
times, and the medians are compared (mmengine/timm benchmark scripts report medians
for the same reason).
"""
import os
import os.path as osp
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

__all__ = [
    'ROOT', 'sync', 'time_interleaved', 'make_row', 'peak_rss_reset',
    'peak_rss_delta_mib', 'add_common_args', 'setup_threads', 'print_rows'
]


def sync(device: torch.device) -> None:
    """Wait for queued kernels (CUDA timing is asynchronous)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_interleaved(fns: Dict[str, Callable[[], object]],
                     repeats: int,
                     device: torch.device = torch.device('cpu'),
                     warmup: int = 1) -> Dict[str, float]:
    """Median wall time (s) of each callable, run in alternation.

    Args:
        fns (dict): Name -> callable doing one unit of work.
        repeats (int): Timed runs of each callable.
        device (torch.device): Synchronised around each run.
        warmup (int): Untimed runs of each callable first.

    Returns:
        dict: Name -> median seconds.

    Examples:
        >>> t = time_interleaved({'a': lambda: sum(range(100))}, repeats=3)
        >>> t['a'] > 0
        True
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def make_row(name: str,
             value: float,
             unit: str,
             baseline_name: Optional[str] = None,
             baseline_value: Optional[float] = None,
             higher_is_better: bool = True,
             aim: Optional[str] = None,
             met: Optional[bool] = None,
             note: str = '') -> dict:
    """A result row; ``ratio`` > 1 always means better than the baseline."""
    ratio = None
    if baseline_value:
        ratio = value / baseline_value if higher_is_better else \
            baseline_value / value
    row = dict(name=name, value=value, unit=unit, baseline_name=baseline_name,
               baseline_value=baseline_value, ratio=ratio)
    if aim is not None:
        row['aim'] = aim
        row['met'] = met
    if note:
        row['note'] = note
    return row


def _status_kib(key: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    return 0


def peak_rss_reset() -> int:
    """Reset the process's peak RSS (Linux ``clear_refs``); returns RSS in KiB."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        pass
    return _status_kib('VmRSS')


def peak_rss_delta_mib(start_kib: int) -> float:
    """Peak RSS since :func:`peak_rss_reset` minus the RSS it returned, in MiB."""
    return (_status_kib('VmHWM') - start_kib) / 1024


def add_common_args(parser) -> None:
    """``--quick``, ``--device``, ``--threads``, ``--repeats`` for every script."""
    parser.add_argument('--quick', action='store_true',
                        help='small sizes and few repeats (what make bench runs)')
    parser.add_argument('--device', default='cpu',
                        help='cpu or cuda (on cuda the half/AMP paths use fp16)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: leave as is)')
    parser.add_argument('--repeats', type=int, default=None,
                        help='timed repeats per measurement (median reported)')


def setup_threads(threads: Optional[int]) -> None:
    if threads:
        torch.set_num_threads(threads)
        os.environ['OMP_NUM_THREADS'] = str(threads)


def print_rows(rows: List[dict]) -> None:
    """One line per row: value, baseline, ratio."""
    for r in rows:
        line = f"{r['name']:<44} {r['value']:>12.4g} {r['unit']}"
        if r.get('ratio') is not None:
            line += (f"   vs {r['baseline_name']} {r['baseline_value']:.4g}"
                     f"   ratio {r['ratio']:.3f}")
        if 'aim' in r:
            line += f"   aim {r['aim']}: {'met' if r['met'] else 'MISSED'}"
        print(line)
