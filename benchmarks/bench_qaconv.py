"""QAConv matching benchmark: ``QAConvHead.match`` against a reference and a matmul.

For 512x7x7 feature maps (IR-50's, L2-normalised), eval mode, with and without
visibility (``vis_mode='seed'``), in fp32 and half precision (bf16 on CPU, fp16 on
CUDA: ``QAConvHead(half_test=True)``), this times in one process, in alternation:

* ``QAConvHead.match`` on P x G maps (the project's matcher);
* the straightforward reference written here (QAConv v2.1's test-time evaluator:
  128 x 128 probe/gallery chunks, one ``einsum`` per chunk into a
  [P, G, hw, hw] tensor, visibility products, two max reductions, BN, FC, logit BN);
* ``torch.mm`` of ``[P*hw, C] x [C, G*hw]`` in the same dtype: the same FLOPs as the
  correlation with nothing else, i.e. what this machine's matmul reaches.

Aims (issue 7): at least 1.5x the reference, at least half of the matmul throughput.
It also records the peak resident memory of a large match with a small
``max_chunk_elems`` against what one P x G x hw x hw tensor would need, and checks that
the matcher and the reference agree (max |score difference|).

Usage:
    python benchmarks/bench_qaconv.py --help
    python benchmarks/bench_qaconv.py --quick --threads 1
    python benchmarks/bench_qaconv.py --device cuda      # fp32 + fp16 on a GPU
"""
import argparse
from typing import List, Optional

import torch
import torch.nn.functional as F

try:
    from benchmarks.common import (add_common_args, make_row,
                                   peak_rss_delta_mib, peak_rss_reset,
                                   print_rows, setup_threads, time_interleaved)
except ImportError:  # run as a script: benchmarks/ is on sys.path, not the root
    from common import (add_common_args, make_row, peak_rss_delta_mib,
                        peak_rss_reset, print_rows, setup_threads,
                        time_interleaved)

C, FEAT = 512, 7
HW = FEAT * FEAT
REF_CHUNK = 128  # QAConv v2.1's test-time probe/gallery chunk


def reference_match(head, probe: torch.Tensor, gallery: torch.Tensor,
                    probe_vis: Optional[torch.Tensor] = None,
                    gallery_vis: Optional[torch.Tensor] = None,
                    dtype: torch.dtype = torch.float32,
                    chunk: int = REF_CHUNK) -> torch.Tensor:
    """The straightforward QAConv evaluator, as a baseline (not the project's code).

    Args:
        head (QAConvHead): Supplies ``bn``, ``fc``, ``logit_bn`` (eval mode).
        probe (Tensor): [P, C, h, w] (normalised over C here, as the head does).
        gallery (Tensor): [G, C, h, w].
        probe_vis, gallery_vis (Tensor, optional): [N, 1, h, w] visibility.
        dtype (torch.dtype): Correlation dtype.
        chunk (int): Probe and gallery chunk size.

    Returns:
        Tensor: [P, G] fp32 scores.
    """
    n_p, n_g = probe.shape[0], gallery.shape[0]
    hw = probe.shape[-1] * probe.shape[-2]
    # QAConvHead.match normalises its inputs too: the same work on both sides.
    p_all = F.normalize(probe, dim=1).flatten(2).to(dtype)
    g_all = F.normalize(gallery, dim=1).flatten(2).to(dtype)
    out = probe.new_empty(n_p, n_g, dtype=torch.float32)
    for p0 in range(0, n_p, chunk):
        p = p_all[p0:p0 + chunk]
        for g0 in range(0, n_g, chunk):
            g = g_all[g0:g0 + chunk]
            s = torch.einsum('pcr,gct->pgrt', p, g)
            if probe_vis is not None:
                vp = probe_vis[p0:p0 + chunk].reshape(-1, 1, hw, 1).to(dtype)
                vg = gallery_vis[g0:g0 + chunk].reshape(1, -1, 1, hw).to(dtype)
                s = s * vp * vg
            x = torch.cat((s.max(dim=3)[0], s.max(dim=2)[0]), dim=-1)
            x = head.bn(x.float().reshape(-1, 1, hw)).reshape(-1, 2, hw)
            x = head.fc(x).sum(dim=(1, 2))
            out[p0:p0 + chunk, g0:g0 + chunk] = head.logit_bn(
                x.reshape(-1, 1)).reshape(p.shape[0], g.shape[0])
    return out


def _maps(n: int, device, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, C, FEAT, FEAT, generator=g), dim=1).to(device)


def build_head(device):
    """An eval-mode QAConvHead with non-trivial BN statistics."""
    import oaml_mm  # noqa: F401
    from oaml_mm.models.heads import QAConvHead
    head = QAConvHead(in_channels=C, feat_size=FEAT).to(device).eval()
    head.bn.running_mean.fill_(0.4)
    head.bn.running_var.fill_(0.01)
    head.logit_bn.running_mean.fill_(0.8)
    head.logit_bn.running_var.fill_(0.05)
    return head


def run(quick: bool = False, device: str = 'cpu', num: Optional[int] = None,
        repeats: Optional[int] = None, memory_check: bool = True) -> List[dict]:
    """Run the benchmark.

    Args:
        quick (bool): P = G = 128 and 3 repeats (else 256 and 5).
        device (str): ``'cpu'`` or ``'cuda'``.
        num (int, optional): P = G; overrides the quick/full size.
        repeats (int, optional): Timed repeats (median reported).
        memory_check (bool): Also measure peak memory of a large match (CPU).

    Returns:
        list[dict]: Rows ``{'name', 'value', 'unit', 'baseline_name',
        'baseline_value', 'ratio'}`` (+ ``aim``/``met``/``note``).
    """
    dev = torch.device(device)
    n = num or (128 if quick else 256)
    repeats = repeats or (3 if quick else 5)
    head = build_head(dev)
    probe, gallery = _maps(n, dev, 0), _maps(n, dev, 1)
    g = torch.Generator().manual_seed(2)
    vp = torch.rand(n, 1, FEAT, FEAT, generator=g).to(dev)
    vg = torch.rand(n, 1, FEAT, FEAT, generator=g).to(dev)
    half_dtype = torch.float16 if dev.type == 'cuda' else torch.bfloat16
    pairs = n * n
    rows = []
    with torch.no_grad():
        for dtype in (torch.float32, half_dtype):
            tag = str(dtype).replace('torch.', '').replace('float32', 'fp32') \
                .replace('bfloat16', 'bf16').replace('float16', 'fp16')
            head.half_test = dtype != torch.float32
            a = probe.flatten(2).transpose(1, 2).reshape(n * HW, C).to(dtype)
            b = gallery.flatten(2).transpose(1, 2).reshape(n * HW, C).to(dtype)
            b = b.t().contiguous()
            for vis in (False, True):
                pv, gv = (vp, vg) if vis else (None, None)
                ours = head.match(probe, gallery, pv, gv)
                ref = reference_match(head, probe, gallery, pv, gv, dtype)
                diff = float((ours - ref).abs().max())
                spread = float(ref.std())
                t = time_interleaved(
                    dict(ours=lambda: head.match(probe, gallery, pv, gv),
                         ref=lambda: reference_match(head, probe, gallery, pv,
                                                     gv, dtype),
                         mm=lambda: torch.mm(a, b)), repeats, dev)
                name = f"qaconv_match/{tag}/{'vis' if vis else 'novis'}"
                speed = pairs / t['ours']
                ratio_ref = t['ref'] / t['ours']
                rows.append(make_row(
                    name, speed, 'pairs/s', 'reference einsum evaluator',
                    pairs / t['ref'], aim='>= 1.5x reference',
                    met=ratio_ref >= 1.5,
                    note=f'P=G={n}, max |score - reference| {diff:.2g} '
                    f'(score std {spread:.2g})'))
                flops = 2.0 * pairs * HW * HW * C
                rows.append(make_row(
                    name + '/matmul_fraction', flops / t['ours'] / 1e9,
                    'GFLOP/s', f'torch.mm [P*hw,C]x[C,G*hw] {tag}',
                    flops / t['mm'] / 1e9, aim='>= 0.5 of matmul',
                    met=t['mm'] / t['ours'] >= 0.5))
    if memory_check and dev.type == 'cpu':
        rows.append(_memory_row(head, quick))
    return rows


def _memory_row(head, quick: bool) -> dict:
    """Peak RSS of one large match with a small chunk budget."""
    n = 256 if quick else 512
    budget = 2**20  # correlation values per chunk: 4 MiB in fp32
    head.half_test = False
    old = head.max_chunk_elems
    head.max_chunk_elems = budget
    probe, gallery = _maps(n, 'cpu', 3), _maps(n, 'cpu', 4)
    with torch.no_grad():
        start = peak_rss_reset()
        head.match(probe, gallery)
        peak = peak_rss_delta_mib(start)
    head.max_chunk_elems = old
    full = n * n * HW * HW * 4 / 2**20
    # Besides one chunk, the matcher holds two copies of its inputs (the head's
    # normalised maps and their cell-row layout): O(P + G), never O(P * G).
    inputs = 2 * n * C * HW * 4 / 2**20
    allowed = budget * 4 / 2**20 + 2 * inputs + n * n * 4 / 2**20
    return make_row(
        f'qaconv_match/peak_memory P=G={n}', peak, 'MiB',
        'one P x G x hw x hw fp32 tensor', full, higher_is_better=False,
        aim=f'<= {allowed:.0f} MiB (chunk budget {budget * 4 / 2**20:.0f} MiB'
        f' + 2 copies of the {inputs:.0f} MiB of input maps + scores)',
        met=peak <= allowed * 1.1,
        note='peak RSS delta (VmHWM after clear_refs)')


def main(argv=None) -> List[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.split('\n')[1:]))
    add_common_args(parser)
    parser.add_argument('--num', type=int, default=None,
                        help='P = G (default 256, 128 with --quick)')
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    rows = run(args.quick, args.device, args.num, args.repeats)
    print_rows(rows)
    return rows


if __name__ == '__main__':
    main()
