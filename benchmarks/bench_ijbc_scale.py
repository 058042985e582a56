"""IJB-C-scale evaluation benchmark: listed-pair scoring vs all-blocks-then-pick.

Builds IJB-C-sized synthetic inputs (23,124 templates, ~15.66M listed pairs, 512-d
template embeddings, 512x7x7 fp16 template maps with 7x7 visibility) and times, from
template features to scores:

* cosine: ``cosine_pairs_tiled`` (tiles, dense products where the listed pairs fill a
  tile) on all listed pairs, and the row-wise ``cosine_pairs``, against scoring every
  enrolment template with every verification template in 128x128 blocks;
* QAConv: ``score_pairs_tiled(QAConvHead.match, QAConvHead.match_pairs, ...)`` and the
  row-wise ``match_listed_pairs(QAConvHead.match_pairs)``, against
  ``QAConvHead.match`` on every 128x128 block (the QAConv reference evaluator's loop)
  then picking.

Pair-list structure (an assumption, stated in docs/evaluation.md): IJB-C's 23,124
templates are 3,531 enrolment templates (one per subject: the 1:N galleries G1 1,772 +
G2 1,759) and 19,593 verification templates (the 1:N probe set); every listed pair
joins one of each, so the pairs fill 22.6% of that 3,531 x 19,593 matrix (15,658,489 /
69.2M), with one genuine pair per verification template. How the impostors are
drawn decides how much a tiled scorer can skip, and is unknown here, so two
structures are generated with the same density:

* ``cohort``: subjects come in cohorts of 64 (ids in row order); a cohort of enrolment
  templates is compared with all verification templates of a cohort, or with none
  (block structure by subject);
* ``uniform``: every enrolment x verification pair is listed independently (no
  structure a tile can exploit: the worst case for tiling).

``--pair-file`` takes a real ``*_template_pair_label.txt`` instead (random features, the
real structure). The baselines and, in quick mode, the QAConv scorers are timed on a
sample (the pairs among the first ``sample_rows`` enrolment and ``8 * sample_rows``
verification templates for the tiled scorer, a few blocks for the baseline) and
extrapolated per pair. Peak memory is the process's peak resident set size.

Usage:
    python benchmarks/bench_ijbc_scale.py --quick    # ~2-4 minutes on 2 cores
    python benchmarks/bench_ijbc_scale.py            # QAConv on all pairs: long
    python benchmarks/bench_ijbc_scale.py --quick --pair-file \\
        data/IJB_release/IJBC/meta/ijbc_template_pair_label.txt
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
NUM_ENROL = 3531
NUM_PAIRS = 15658489
DIM = 512
MAP_SHAPE = (512, 7, 7)
COHORT = 64
STRUCTURES = ('cohort', 'uniform')


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def make_pairs(structure: str = 'cohort', seed: int = 0,
               num_enrol: int = NUM_ENROL, num_templates: int = NUM_TEMPLATES,
               num_pairs: int = NUM_PAIRS, cohort: int = COHORT):
    """Synthetic IJB-C-like pair list (see the module doc).

    Rows ``[0, num_enrol)`` are enrolment templates (one per subject, in subject
    order), the rest verification templates of random subjects, sorted by subject.

    Returns:
        tuple: ``(idx_a, idx_b, label)``: int64 enrolment rows, int64 verification
        rows, bool genuine flags, sorted by (a, b).
    """
    rng = np.random.default_rng(seed)
    num_ver = num_templates - num_enrol
    ver_subject = np.sort(rng.integers(0, num_enrol, num_ver))
    density = num_pairs / (num_enrol * num_ver)
    if structure == 'uniform':
        listed = rng.random((num_enrol, num_ver), dtype=np.float32) < density
    elif structure == 'cohort':
        n_c = -(-num_enrol // cohort)
        blocks = rng.random((n_c, n_c)) < density
        e_c = np.arange(num_enrol) // cohort
        listed = blocks[e_c[:, None], (ver_subject // cohort)[None, :]]
    else:
        raise ValueError(f'structure must be one of {STRUCTURES}')
    genuine = np.zeros_like(listed)
    genuine[ver_subject, np.arange(num_ver)] = True
    listed |= genuine
    a, b = np.nonzero(listed)
    label = genuine[a, b]
    return (torch.from_numpy(a), torch.from_numpy(b + num_enrol),
            torch.from_numpy(label))


def pairs_from_file(path: str):
    """Rows of a real IJB pair file: first column -> rows of the t1 templates, etc."""
    from oaml_mm.datasets.ijb import read_ijb_template_pairs
    t1, t2, label = read_ijb_template_pairs(path)
    ids, inv = np.unique(np.concatenate([t1, t2]), return_inverse=True)
    n = t1.size
    return (torch.from_numpy(inv[:n]), torch.from_numpy(inv[n:]),
            torch.from_numpy(label.astype(bool)), ids.size)


def make_features(num_templates: int = NUM_TEMPLATES,
                  seed: int = 0) -> Dict[str, torch.Tensor]:
    """Unit embeddings, unit fp16 maps (built in chunks) and visibility."""
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(num_templates, DIM, generator=g), dim=1)
    maps = torch.empty((num_templates, ) + MAP_SHAPE, dtype=torch.float16)
    for s in range(0, num_templates, 1024):
        n = min(1024, num_templates - s)
        maps[s:s + n] = F.normalize(
            torch.randn((n, ) + MAP_SHAPE, generator=g), dim=1).half()
    vis = torch.rand(num_templates, 1, 7, 7, generator=g)
    return dict(emb=emb, maps=maps, vis=vis)


def build_matcher():
    """The project's QAConv head (eval mode) with its real matching functions."""
    import oaml_mm  # noqa: F401
    from oaml_mm.models.heads import QAConvHead
    head = QAConvHead(in_channels=MAP_SHAPE[0], feat_size=MAP_SHAPE[1])
    return head.eval()


AIM = '>= 1x all blocks'


def _row(name, value, unit, baseline_name=None, baseline_value=None,
         higher_is_better=True, note=None, aim=None) -> dict:
    ratio = None
    if baseline_value:
        ratio = value / baseline_value if higher_is_better else \
            baseline_value / value
    row = dict(name=name, value=value, unit=unit, baseline_name=baseline_name,
               baseline_value=baseline_value, ratio=ratio)
    if note:
        row['note'] = note
    if aim:
        row.update(aim=aim, met=bool(ratio is not None and ratio >= 1.0))
    return row


def _block_seconds(fn, rows_a, rows_b, max_blocks, block=128) -> float:
    """Seconds per ``block x block`` dense block (first ``max_blocks`` blocks)."""
    t0 = time.perf_counter()
    done = 0
    for ps in range(0, rows_a.numel(), block):
        for gs in range(0, rows_b.numel(), block):
            if done >= max_blocks:
                break
            fn(rows_a[ps:ps + block], rows_b[gs:gs + block])
            done += 1
        if done >= max_blocks:
            break
    return (time.perf_counter() - t0) / done


def _progress(total: int, label: str):
    t0 = time.perf_counter()
    state = dict(done=0, last=t0)

    def update(k: int) -> None:
        state['done'] += k
        now = time.perf_counter()
        if now - state['last'] > 30:
            state['last'] = now
            rate = state['done'] / (now - t0)
            print(f'  {label} {state["done"]}/{total} pairs, {rate:.0f} '
                  f'pairs/s, ETA {(total - state["done"]) / rate:.0f} s',
                  file=sys.stderr)

    return update


def run(quick: bool = False,
        structures=('cohort', 'uniform'),
        pair_file: Optional[str] = None,
        tile: Optional[int] = None,
        sample_rows: Optional[int] = None,
        rowwise_pairs: int = 4096,
        qaconv: bool = True,
        half: bool = False) -> List[dict]:
    """Run the benchmark.

    Args:
        quick (bool): Time QAConv on the pairs among the first ``sample_rows``
            enrolment and ``8 * sample_rows`` verification templates and the
            baseline on 8 blocks (full: all pairs, 32 blocks).
        structures (Sequence[str]): Synthetic pair-list structures to time.
        pair_file (str, optional): A real IJB pair file instead of synthetic lists.
        tile (int, optional): Tile side. Defaults to ``DEFAULT_TILE``.
        sample_rows (int, optional): Defaults to 256 in quick mode, all in full.
        rowwise_pairs (int): Pairs timed with the row-wise QAConv scorer.
        qaconv (bool): Also time QAConv (False: the cosine rows only).
        half (bool): QAConv with ``half_test`` (bf16 correlations on CPU) on both
            sides; its rows are tagged ``bf16``.

    Returns:
        list[dict]: Rows ``{'name', 'value', 'unit', 'baseline_name',
        'baseline_value', 'ratio'}`` (+ ``note``).
    """
    from oaml_mm.evaluation.functional import (COSINE_TILE, DEFAULT_TILE,
                                               QACONV_MIN_FILL, cosine_pairs,
                                               cosine_pairs_tiled,
                                               match_listed_pairs,
                                               score_pairs_tiled)
    from oaml_mm.evaluation.functional.dense_cosine import cosine_pairs_dense
    torch.set_grad_enabled(False)
    tile = tile or DEFAULT_TILE
    sample_rows = sample_rows or (256 if quick else None)
    t0 = time.perf_counter()
    lists = {}
    num_templates = NUM_TEMPLATES
    if pair_file:
        a, b, y, num_templates = pairs_from_file(pair_file)
        lists['file'] = (a, b, y)
    else:
        for s in structures:
            lists[s] = make_pairs(s)[:3]
    feats = make_features(num_templates)
    rows = [_row('inputs_build_time', time.perf_counter() - t0, 's',
                 higher_is_better=False)]
    head = build_matcher()
    head.half_test = half
    qtag = '_bf16' if half else ''
    emb, maps, vis = feats['emb'], feats['maps'], feats['vis']

    def cos_block(pr, gr):
        return emb[pr] @ emb[gr].T

    def q_block(pr, gr):
        return head.match(maps[pr].float(), maps[gr].float(), vis[pr], vis[gr])

    for name, (a, b, _) in lists.items():
        n = a.numel()
        ua, ub = a.unique(), b.unique()
        grid = ua.numel() * ub.numel()
        n_blocks = -(-ua.numel() // 128) * -(-ub.numel() // 128)
        base = f'{name}: all 128x128 blocks then pick (extrapolated)'
        note = (f'{n} pairs, {ua.numel()} x {ub.numel()} templates, density '
                f'{n / grid:.3f}, tile {max(tile, COSINE_TILE)}')

        # cosine: everything on all pairs
        st = {}
        t0 = time.perf_counter()
        cosine_pairs_tiled(emb, a, b, tile=max(tile, COSINE_TILE), stats=st)
        tiled_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        cosine_pairs(emb, a, b)
        row_s = time.perf_counter() - t0
        base_s = _block_seconds(cos_block, ua, ub, 400 if quick else 4000) * \
            n_blocks
        rows.append(_row(f'{name}/cosine_tiled_pairs_per_s', n / tiled_s,
                         'pairs/s', base, n / base_s,
                         note=note + f', dense work {st["dense_scored"] / grid:.2f}'
                         ' of all blocks (baseline time excludes its picking)',
                         aim=AIM))
        rows.append(_row(f'{name}/cosine_rowwise_pairs_per_s', n / row_s,
                         'pairs/s', base, n / base_s))
        # Whole-row products of the distinct templates, then one gather (issue 17,
        # item 2: the baseline "to beat or to adopt").
        t0 = time.perf_counter()
        dense = cosine_pairs_dense(emb, a, b)
        dense_s = time.perf_counter() - t0
        ref = cosine_pairs(emb, a[:100000], b[:100000])
        diff = float((dense[:100000] - ref).abs().max())
        rows.append(_row(f'{name}/cosine_dense_pairs_per_s', n / dense_s,
                         'pairs/s', base, n / base_s, aim=AIM,
                         note='cosine_pairs_dense (one block of at most 2**27 '
                         f'products), {tiled_s / dense_s:.2f}x the tiled scorer; '
                         'max |dense - '
                         f'row-wise| {diff:.1g} on 100k pairs'))
        if not qaconv:
            continue

        # QAConv: tiled on the pairs of the first sample_rows enrolment templates
        if sample_rows:
            # The pairs among the first sample_rows enrolment and 8 x
            # sample_rows verification templates: whole tiles of both sides.
            keep = (a <= ua[min(sample_rows, ua.numel()) - 1]) & \
                (b <= ub[min(8 * sample_rows, ub.numel()) - 1])
            qa, qb = a[keep], b[keep]
        else:
            qa, qb = a, b
        st = {}
        t0 = time.perf_counter()
        score_pairs_tiled(head.match, head.match_pairs, maps, vis, qa, qb,
                          tile=tile, min_fill=QACONV_MIN_FILL, chunk=1024,
                          progress=_progress(qa.numel(), f'{name} qaconv'),
                          stats=st)
        q_s = time.perf_counter() - t0
        sub_grid = qa.unique().numel() * qb.unique().numel()
        q_base_s = _block_seconds(q_block, ua, ub, 8 if quick else 32) * n_blocks
        timed = '' if qa.numel() == n else f' ({qa.numel()} pairs timed)'
        rows.append(_row(
            f'{name}/qaconv{qtag}_tiled_pairs_per_s{timed}', qa.numel() / q_s,
            'pairs/s', base, n / q_base_s,
            note=f'dense work {st["dense_scored"] / sub_grid:.2f} of all blocks '
            f'on the timed templates; {st["dense_tiles"]} dense / '
            f'{st["rowwise_tiles"]} row-wise tiles', aim=AIM))
        rows.append(_row(f'{name}/qaconv{qtag}_tiled_time_all_pairs',
                         n / (qa.numel() / q_s), 's', base, q_base_s,
                         higher_is_better=False))
        k = min(rowwise_pairs, n)
        t0 = time.perf_counter()
        match_listed_pairs(head.match_pairs, maps, vis, a[:k], b[:k], chunk=1024)
        r_s = time.perf_counter() - t0
        rows.append(_row(f'{name}/qaconv{qtag}_rowwise_pairs_per_s ({k} pairs timed)',
                         k / r_s, 'pairs/s', base, n / q_base_s))
    rows.append(_row('peak_rss', _peak_rss_gb(), 'GB'))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='sample QAConv pairs and baseline blocks')
    parser.add_argument('--structure', nargs='+', default=list(STRUCTURES),
                        choices=STRUCTURES)
    parser.add_argument('--pair-file', default=None,
                        help='a real *_template_pair_label.txt')
    parser.add_argument('--tile', type=int, default=None)
    parser.add_argument('--sample-rows', type=int, default=None)
    parser.add_argument('--no-qaconv', action='store_true',
                        help='time the cosine scorers only')
    parser.add_argument('--half', action='store_true',
                        help='QAConv in bf16 (half_test) on both sides')
    args = parser.parse_args(argv)
    for r in run(args.quick, args.structure, args.pair_file, args.tile,
                 args.sample_rows, qaconv=not args.no_qaconv,
                 half=args.half):
        ratio = '' if r['ratio'] is None else f"  x{r['ratio']:.2f} vs " \
            f"{r['baseline_name']} ({r['baseline_value']:.4g})"
        print(f"{r['name']:<56} {r['value']:>12.4g} {r['unit']}{ratio}")
        if r.get('note'):
            print(f"    {r['note']}")


if __name__ == '__main__':
    main()
