"""IJB-C-scale evaluation benchmark: scoring only the listed pairs vs all-then-pick.

Builds IJB-C-sized synthetic inputs (23,124 templates, 15,658,489 listed pairs, 512-d
template embeddings, 512x7x7 fp16 template maps with 7x7 visibility), then times from
features to scores:

* cosine branch: ``cosine_pairs`` on the listed pairs, against scoring every probe
  template with every gallery template in 128x128 blocks and picking the listed pairs;
* QAConv branch: the project's ``QAConvHead.match_pairs`` (``qaconv_match_pairs``) on
  the listed pairs, against ``QAConvHead.match`` on every 128x128 probe x gallery
  block (the QAConv reference evaluator's loop) and picking.

The baselines are timed on a sample of blocks and extrapolated to all blocks; in quick
mode the listed-pair QAConv scoring is timed on a sample of pairs too (the rows say
which). Peak memory is the process's peak resident set size.

Usage:
    python benchmarks/bench_ijbc_scale.py            # full (long on 2 CPU cores)
    python benchmarks/bench_ijbc_scale.py --quick    # ~1-2 minutes
"""
import argparse
import resource
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

NUM_TEMPLATES = 23124
NUM_PAIRS = 15658489
DIM = 512
MAP_SHAPE = (512, 7, 7)


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def make_inputs(seed: int = 0, num_templates: int = NUM_TEMPLATES,
                num_pairs: int = NUM_PAIRS) -> Dict[str, torch.Tensor]:
    """Synthetic IJB-C-sized template features and pair list (maps built in chunks)."""
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(num_templates, DIM, generator=g), dim=1)
    maps = torch.empty((num_templates, ) + MAP_SHAPE, dtype=torch.float16)
    for s in range(0, num_templates, 1024):
        n = min(1024, num_templates - s)
        maps[s:s + n] = F.normalize(
            torch.randn((n, ) + MAP_SHAPE, generator=g), dim=1).half()
    vis = torch.rand(num_templates, 1, 7, 7, generator=g)
    # Probe templates are the first half, gallery the second (IJB-C's listed pairs
    # also form a sparse subset of a probe x gallery product).
    half = num_templates // 2
    rng = np.random.default_rng(seed)
    a = np.sort(rng.integers(0, half, num_pairs))
    b = rng.integers(half, num_templates, num_pairs)
    return dict(emb=emb, maps=maps, vis=vis, idx_a=torch.from_numpy(a),
                idx_b=torch.from_numpy(b), probe_rows=torch.arange(half),
                gallery_rows=torch.arange(half, num_templates))


def build_matcher():
    """The project's QAConv head (eval mode) with its real matching functions."""
    import oaml_mm  # noqa: F401
    from oaml_mm.models.heads import QAConvHead
    head = QAConvHead(in_channels=MAP_SHAPE[0], feat_size=MAP_SHAPE[1])
    return head.eval()


def _row(name, value, unit, baseline_name=None, baseline_value=None,
         higher_is_better=True) -> dict:
    ratio = None
    if baseline_value:
        ratio = value / baseline_value if higher_is_better else \
            baseline_value / value
    return dict(name=name, value=value, unit=unit, baseline_name=baseline_name,
                baseline_value=baseline_value, ratio=ratio)


def _cosine_block_baseline(emb, probe_rows, gallery_rows, max_blocks):
    t0 = time.perf_counter()
    done = 0
    for ps in range(0, probe_rows.numel(), 128):
        p = emb[probe_rows[ps:ps + 128]]
        for gs in range(0, gallery_rows.numel(), 128):
            if done >= max_blocks:
                break
            _ = p @ emb[gallery_rows[gs:gs + 128]].T
            done += 1
        if done >= max_blocks:
            break
    return (time.perf_counter() - t0) / done


def run(quick: bool = False,
        qaconv_pairs: Optional[int] = None) -> List[dict]:
    """Run the benchmark.

    Args:
        quick (bool): Time QAConv on a sample of pairs and the baselines on fewer
            blocks (about a minute on 2 cores). Defaults to False.
        qaconv_pairs (int, optional): Listed pairs scored with QAConv; all of them
            by default in full mode, 16,384 in quick mode.

    Returns:
        list[dict]: Rows ``{'name', 'value', 'unit', 'baseline_name',
        'baseline_value', 'ratio'}``.
    """
    from oaml_mm.evaluation.functional import (cosine_pairs,
                                               match_all_then_pick,
                                               match_listed_pairs)
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    data = make_inputs()
    build_s = time.perf_counter() - t0
    rows = [_row('inputs_build_time', build_s, 's', higher_is_better=False)]
    n = data['idx_a'].numel()
    n_blocks = -(-data['probe_rows'].numel() // 128) * \
        -(-data['gallery_rows'].numel() // 128)

    # cosine branch, end to end on all listed pairs
    t0 = time.perf_counter()
    cos = cosine_pairs(data['emb'], data['idx_a'], data['idx_b'])
    cos_s = time.perf_counter() - t0
    per_block = _cosine_block_baseline(data['emb'], data['probe_rows'],
                                       data['gallery_rows'],
                                       200 if quick else 2000)
    base_cos_s = per_block * n_blocks  # + picking, ignored (favours baseline)
    rows.append(_row('cosine_listed_pairs_per_s', n / cos_s, 'pairs/s',
                     'cosine_all_blocks_then_pick (extrapolated)',
                     n / base_cos_s))
    del cos

    head = build_matcher()
    qn = qaconv_pairs or (16384 if quick else n)
    sel = slice(0, qn)
    t0 = time.perf_counter()
    done = [0]
    last = [t0]

    def progress(k):
        done[0] += k
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            rate = done[0] / (last[0] - t0)
            print(f'  qaconv {done[0]}/{qn} pairs, {rate:.0f} pairs/s, '
                  f'ETA {(qn - done[0]) / rate:.0f} s', file=sys.stderr)

    match_listed_pairs(head.match_pairs, data['maps'], data['vis'],
                       data['idx_a'][sel], data['idx_b'][sel], chunk=1024,
                       progress=progress)
    q_s = time.perf_counter() - t0
    sample_blocks = 2 if quick else 8
    t0 = time.perf_counter()
    _, _, blocks = match_all_then_pick(
        head.match, data['maps'], data['vis'], data['probe_rows'],
        data['gallery_rows'], data['idx_a'][:0], data['idx_b'][:0],
        block=128, max_blocks=sample_blocks)
    base_q_s = (time.perf_counter() - t0) / blocks * n_blocks
    rows.append(_row(
        'qaconv_listed_pairs_per_s' + ('' if qn == n else f' ({qn} pairs timed)'),
        qn / q_s, 'pairs/s',
        f'qaconv_all_128x128_blocks_then_pick ({blocks} of {n_blocks} blocks '
        'timed, extrapolated)', n / base_q_s))
    rows.append(_row('qaconv_branch_time_all_pairs', n / (qn / q_s), 's',
                     'qaconv_all_blocks_then_pick', base_q_s,
                     higher_is_better=False))
    rows.append(_row('peak_rss', _peak_rss_gb(), 'GB'))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='sample QAConv pairs and baseline blocks')
    parser.add_argument('--qaconv-pairs', type=int, default=None,
                        help='number of listed pairs scored with QAConv')
    args = parser.parse_args(argv)
    for r in run(args.quick, args.qaconv_pairs):
        ratio = '' if r['ratio'] is None else f"  x{r['ratio']:.1f} vs " \
            f"{r['baseline_name']} ({r['baseline_value']:.4g})"
        print(f"{r['name']:<48} {r['value']:>14.4g} {r['unit']}{ratio}")


if __name__ == '__main__':
    main()
