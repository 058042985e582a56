"""GraphSampler cost per epoch: the class scoring (N^2 QAConv pairs) and the drawing.

QAConv-GS rebuilds its class graph at every epoch start: one representative image per
class goes through the backbone (N forward passes, see ``bench_inference.py``), then all
N x N class pairs are scored by ``QAConvHead.match`` and each row's top-k kept
(:func:`oaml_mm.datasets.samplers.graph_sampler.nearest_classes`). The scoring grows
with N^2, so it is timed here at a small N and extrapolated quadratically; the baseline
row is a plain ``torch.mm`` producing the same correlation values and nothing else,
which shows how close to the machine's matmul the scoring runs. The drawing of the
epoch's batches (linear in N) is timed at the real sizes.

Usage:
    python benchmarks/bench_graph_sampler.py --help
    python benchmarks/bench_graph_sampler.py --quick --threads 2
"""
import argparse
import time
from typing import List

import numpy as np
import torch

try:
    from benchmarks.common import (add_common_args, make_row, print_rows,
                                   setup_threads, time_interleaved)
except ImportError:  # run as a script
    from common import (add_common_args, make_row, print_rows, setup_threads,
                        time_interleaved)

from oaml_mm.datasets.samplers.graph_sampler import (GraphSampler,
                                                     nearest_classes)
from oaml_mm.models.functional import normalize_maps
from oaml_mm.registry import MODELS

HW = 49


class _Labels:

    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def get_gt_labels(self):
        return self.labels


def scoring_rows(num: int, channels: int, repeats: int, k: int = 15) -> List[dict]:
    """Time the graph scoring of ``num`` classes; extrapolate to 10k / 100k."""
    head = MODELS.build(dict(type='QAConvHead', in_channels=channels,
                             vis_mode='gate')).eval()
    g = torch.Generator().manual_seed(0)
    maps = normalize_maps(torch.randn(num, channels, 7, 7, generator=g))
    vis = torch.rand(num, 1, 7, 7, generator=g)
    a = maps.permute(0, 2, 3, 1).reshape(num * HW, channels).contiguous()
    b = a.t().contiguous()

    def graph():
        with torch.no_grad():
            nearest_classes(lambda r: head.match(maps[r], maps, vis[r], vis),
                            num, k)

    def matmul():
        for r0 in range(0, num, 256):
            torch.mm(a[r0 * HW:(r0 + 256) * HW], b)

    t = time_interleaved({'graph': graph, 'mm': matmul}, repeats)
    per_pair = t['graph'] / num**2
    rows = [
        make_row(f'graph scoring C={channels} N={num}', t['graph'], 's',
                 'torch.mm of the same correlations', t['mm'], higher_is_better=False),
        make_row(f'graph scoring C={channels} per pair', per_pair * 1e6, 'us'),
    ]
    for n in (10_000, 100_000):
        rows.append(make_row(f'graph scoring C={channels} N={n} (extrap.)',
                             per_pair * n * n, 's'))
    return rows


def drawing_rows(num_classes: int, per_class: int = 20,
                 batch_size: int = 64, k: int = 4) -> List[dict]:
    """Time one epoch's batch drawing with a ready graph (linear in N)."""
    labels = np.repeat(np.arange(num_classes), per_class)
    s = GraphSampler(_Labels(labels), batch_size, k, seed=0)
    rng = np.random.RandomState(0)
    s.set_graph(0, rng.randint(0, num_classes,
                               (num_classes, batch_size // k - 1)))
    t0 = time.perf_counter()
    s.batches()
    return [make_row(f'batch drawing N={num_classes}', time.perf_counter() - t0,
                     's')]


def run(quick: bool = False, repeats: int = 3) -> List[dict]:
    num = 128 if quick else 512
    rows = []
    for channels in (128, 512):
        rows += scoring_rows(num, channels, repeats)
    for n in ((1000, 10_000) if quick else (10_000, 100_000)):
        rows += drawing_rows(n)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_common_args(parser)
    args = parser.parse_args()
    setup_threads(args.threads)
    print_rows(run(args.quick, args.repeats or (1 if args.quick else 3)))


if __name__ == '__main__':
    main()
