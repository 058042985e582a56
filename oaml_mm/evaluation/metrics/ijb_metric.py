"""IJB-B / IJB-C 1:1 verification (TAR@FAR) and 1:N identification.

1:1 follows insightface's ``IJB_11.py`` / AdaFace (docs/evaluation.md): template
embedding = L2-normalised sum over media of the mean over the media's images of the
norm-keeping, flip-fused image features; cosine per listed pair; TAR@FAR with the
closest-FPR rule. QAConv works on template maps pooled with visibility weights while the
images stream in (:class:`~oaml_mm.evaluation.functional.TemplateAccumulator`), and only
the listed pairs are scored, tile by tile
(:func:`~oaml_mm.evaluation.functional.score_pairs_tiled`: dense products where the
listed pairs fill a tile, row-wise elsewhere), split over the ranks.

``pooling='visibility'`` pools templates by visibility (embeddings too; see
:mod:`~oaml_mm.evaluation.functional.template_pooling` and docs/evaluation.md);
``pooling=('mean', 'visibility')`` reports both from one pass, the visibility
rule's branches as ``adaface_vispool``, ``qaconv_vispool``, ``fused_vispool``.
"""
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.dist import get_dist_info
from torch.nn.modules.batchnorm import _BatchNorm

from oaml_mm.datasets.ijb import (check_1n_lists, ijb_meta_paths, read_1n_csv,
                                  read_ijb_template_pairs, read_ijb_tid_mid)
from oaml_mm.errors import DataFormatError
from oaml_mm.evaluation.functional import (COSINE_MIN_FILL, COSINE_TILE,
                                           DEFAULT_FARS, DEFAULT_TILE,
                                           FUSED_VIS, POOL_SUFFIX,
                                           QACONV_MIN_FILL,
                                           TemplateAccumulator, check_pooling,
                                           dot_all, dot_rows, fuse_scores,
                                           identification_1n, impostor_stats,
                                           match_all_then_pick,
                                           mean_visibility, plan_pair_units,
                                           score_units, split_units)
from oaml_mm.registry import METRICS
from .face_metric_base import BRANCHES, FaceMetricBase

__all__ = ['IJBMetric', 'read_1n_csv']


@METRICS.register_module()
class IJBMetric(FaceMetricBase):
    """IJB-B/IJB-C TAR@FAR (and 1:N when its CSVs are given) for every branch.

    Samples need ``template_id`` and ``media_id`` metainfo (``IJBDataset``) and the
    prediction's ``embedding`` and ``norm`` (``feature_map``/``visibility`` for
    QAConv). The meta files give the template list and each media's image count.

    Keys (percent): ``{dataset}/{branch}/TAR@FAR=1e-04`` ... , ``/AUC``, ``/EER``;
    with 1:N files ``/1N_rank1``, ``/1N_rank5``, ``/1N_rank10`` (closed set over the
    union of the galleries) and ``/1N_TPIR@FPIR=1e-02`` (open set, mean over the
    galleries). A branch fed a NaN/Inf embedding, norm, map or score reports NaN
    and ``/nonfinite_features`` (templates) or ``/nonfinite_scores`` (pairs)
    instead (:meth:`FaceMetricBase._mask_nonfinite`). With a visibility-aware
    fusion (``fusion_params`` or the tested checkpoint's) also
    ``{dataset}/fused_vis/TAR@FAR=..``, ``/AUC``, ``/EER`` (1:1 only), a
    template's visibility being the mean of its pooled visibility map (the map
    the params were fitted on: their ``vis_range``, raw without one).

    Templates pool the raw predicted maps and QAConv calibrates the pooled map
    (the bound model's ``vis_range``); with the model's
    ``test_cfg.pool_vis='calibrated'`` each image's calibrated map weighs its
    cells (and, by the visibility rule, its embedding) and QAConv matches the
    pooled maps without stretching them again.

    Args:
        dataset_name (str): Key prefix. Defaults to 'ijbc'.
        data_root (str): Folder holding ``meta/`` (see docs/data_layout.md).
        subset (str): 'IJBB' or 'IJBC'; chooses the default meta file names.
        pair_file (str, optional): Overrides ``meta/<subset>_template_pair_label.txt``.
        tid_mid_file (str, optional): Overrides ``meta/<subset>_face_tid_mid.txt``.
        gallery_files (Sequence[str]): 1:N gallery CSVs (relative to ``data_root``);
            missing files switch 1:N off with a log line.
        probe_file (str, optional): 1:N probe CSV.
        fars (Sequence[float]): Defaults to 1e-6 ... 1e-1.
        far_rule (str): 'closest' (published tables) or 'strict'.
        ranks (Sequence[int]): Defaults to (1, 5, 10).
        fpirs (Sequence[float]): Defaults to (0.01, 0.1).
        pair_chunk (int): Pairs per row-wise QAConv call. Defaults to 4096.
        pair_tile (int): Templates per tile side when scoring the listed pairs
            with QAConv (see
            :func:`~oaml_mm.evaluation.functional.score_pairs_tiled`; the cosine
            branch uses at least ``COSINE_TILE``). Defaults to 256.
        pooling (str | Sequence[str]): Template pooling rule, ``'mean'`` (the
            IJB protocol; maps per cell by visibility) or ``'visibility'``
            (embeddings weighted by each image's mean visibility too; template
            visibility weighted by visibility), or both as a tuple: one pass,
            one template store per rule (memory x2), the ``'visibility'`` keys
            as ``{dataset}/{branch}_vispool/...``. Defaults to 'mean'.
        **kwargs: See :class:`FaceMetricBase` (branches, fuse_weights, pair_chunk...).

    Raises:
        ConfigError: An unknown ``pooling`` rule (or one listed twice).

    Example:
        >>> test_evaluator = dict(
        ...     type='IJBMetric', dataset_name='ijbc', subset='IJBC',
        ...     data_root='data/IJB_release/IJBC',
        ...     gallery_files=('meta/ijbc_1N_gallery_G1.csv',
        ...                    'meta/ijbc_1N_gallery_G2.csv'),
        ...     probe_file='meta/ijbc_1N_probe_mixed.csv')
    """

    def __init__(self,
                 dataset_name: str = 'ijbc',
                 data_root: str = 'data/IJB_release/IJBC',
                 subset: str = 'IJBC',
                 pair_file: Optional[str] = None,
                 tid_mid_file: Optional[str] = None,
                 gallery_files: Sequence[str] = (),
                 probe_file: Optional[str] = None,
                 branches: Sequence[str] = BRANCHES,
                 fuse_weights: Sequence[float] = (0.5, 0.5),
                 fars: Sequence[float] = DEFAULT_FARS,
                 far_rule: str = 'closest',
                 ranks: Sequence[int] = (1, 5, 10),
                 fpirs: Sequence[float] = (0.01, 0.1),
                 pair_chunk: int = 4096,
                 pair_tile: int = DEFAULT_TILE,
                 pooling: Union[str, Sequence[str]] = 'mean',
                 **kwargs) -> None:
        super().__init__(dataset_name, branches, fuse_weights,
                         pair_chunk=pair_chunk, **kwargs)
        paths = ijb_meta_paths(data_root, subset)
        j = (lambda p: p if p is None or osp.isabs(p) else
             osp.join(data_root, p))
        self.pair_file = j(pair_file) or paths['pairs']
        self.tid_mid_file = j(tid_mid_file) or paths['tid_mid']
        self.gallery_files = [j(p) for p in gallery_files]
        self.probe_file = j(probe_file)
        self.fars = tuple(fars)
        self.far_rule = far_rule
        self.ranks = tuple(ranks)
        self.fpirs = tuple(fpirs)
        self.pair_tile = int(pair_tile)
        self.pooling = check_pooling(pooling, f'{type(self).__name__} pooling')
        self._meta_loaded = False
        self.acc: Optional[TemplateAccumulator] = None
        # One accumulator per pooling rule, filled by process().
        self.accs: Dict[str, TemplateAccumulator] = {}
        # With a calibrated model, the raw maps' template visibility too (per
        # rule, visibility only: h*w values per template), read only by a
        # visibility fusion fitted on another map than the matcher's.
        self.raw_accs: Dict[str, TemplateAccumulator] = {}
        self._raw_acc: Optional[TemplateAccumulator] = None

    # -- meta -----------------------------------------------------------------
    def _load_meta(self) -> None:
        if self._meta_loaded:
            return
        _, tids, mids = read_ijb_tid_mid(self.tid_mid_file)
        self.templates = np.unique(tids)
        keys, counts = np.unique(np.stack([tids, mids], 1), axis=0,
                                 return_counts=True)
        self._media_count = {(int(t), int(m)): int(c)
                             for (t, m), c in zip(keys, counts)}
        t1, t2, label = read_ijb_template_pairs(self.pair_file)
        known1 = np.isin(t1, self.templates)
        known2 = np.isin(t2, self.templates)
        bad = np.nonzero(~(known1 & known2))[0]
        if bad.size:
            i = int(bad[0])
            t = int(t1[i] if not known1[i] else t2[i])
            raise DataFormatError(
                self.pair_file, f'template {t} has no images in '
                f'{self.tid_mid_file} ({bad.size} pairs affected)',
                record=f'line {i + 1}', field='t1' if not known1[i] else 't2')
        self.pair_a = self._rows(t1, self.pair_file, 'template pair list')
        self.pair_b = self._rows(t2, self.pair_file, 'template pair list')
        self.pair_label = label.astype(bool)
        self.galleries = []
        self.probes = None
        files = self.gallery_files + ([self.probe_file]
                                      if self.probe_file else [])
        missing = [p for p in files if not osp.isfile(p)]
        if files and missing:
            self._log_once('no1n', f'1:N skipped, missing {missing}')
        elif files:
            lists = [(p, read_1n_csv(p)) for p in self.gallery_files]
            probe = read_1n_csv(self.probe_file)
            check_1n_lists([(p, t) for p, (t, _) in lists],
                           (self.probe_file, probe[0]))
            for p, (t, s) in lists:
                self.galleries.append((self._rows(t, p, '1:N list'), s))
            t, s = probe
            self.probes = (self._rows(t, self.probe_file, '1:N list'), s)
        self._meta_loaded = True

    def _rows(self, template_ids: np.ndarray, path: str,
              what: str) -> torch.Tensor:
        """Rows of ``template_ids``; a template without images is an error."""
        pos = np.searchsorted(self.templates, template_ids)
        pos = np.clip(pos, 0, len(self.templates) - 1)
        bad = np.nonzero(self.templates[pos] != template_ids)[0]
        if bad.size:
            i = int(bad[0])
            raise DataFormatError(
                path, f'template {int(template_ids[i])} of the {what} has no '
                f'images in {self.tid_mid_file} ({bad.size} such entries)',
                record=f'template #{i + 1}', field='TEMPLATE_ID')
        return torch.as_tensor(pos, dtype=torch.int64)

    # -- streaming --------------------------------------------------------------
    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Add one batch of image predictions to their templates."""
        self._load_meta()
        rows, feats, maps, vis, w = [], [], [], [], []
        # The visibility rule weights embeddings by visibility, maps or not.
        want_vis = self.needs_maps or 'visibility' in self.pooling
        for s in self._samples(data_samples):
            t, m = int(s['template_id']), int(s['media_id'])
            n = self._media_count.get((t, m))
            if n is None:
                raise DataFormatError(
                    self.tid_mid_file, f'image {s.get("img_path")} has template '
                    f'{t} / media {m}, which this file does not list',
                    field='template_id')
            rows.append(int(np.searchsorted(self.templates, t)))
            w.append(1.0 / n)
            emb = torch.as_tensor(s['embedding']).float().reshape(-1)
            norm = torch.as_tensor(s.get('norm', 1.0)).float().reshape(-1)[:1]
            feats.append(emb * norm)
            if self.needs_maps and 'feature_map' in s:
                maps.append(torch.as_tensor(s['feature_map']))
            if want_vis:
                v = s.get('visibility')
                if v is not None:
                    vis.append(torch.as_tensor(v).float())
                elif maps:
                    vis.append(torch.ones(1, *maps[-1].shape[1:]))
        if not rows:
            return
        if len(vis) != len(rows):
            # Without a visibility map per image, every image counts fully.
            vis = []
        raw = torch.stack(vis) if vis else None
        # With test_cfg.pool_vis='calibrated', each image's prediction
        # calibrated by the model's vis_range weighs its cells (and, by the
        # visibility rule, its embedding) and the pooled map is calibrated;
        # by default the raw maps are pooled and the matcher calibrates them.
        calibrated = self._calibrate(raw, self.pool_vis_range())
        keep_raw = self._keeps_raw_visibility()
        for mode in self.pooling:
            acc = self.accs.get(mode)
            if acc is None:
                acc = self.accs[mode] = self._new_accumulator(
                    len(self.templates), feats[0].numel(),
                    tuple(maps[0].shape) if maps else None, mode)
            acc.add(torch.tensor(rows), torch.stack(feats),
                    torch.stack(maps) if maps and acc.has_maps else None,
                    calibrated, torch.tensor(w, dtype=torch.float64))
            if keep_raw and raw is not None and acc.has_maps:
                racc = self.raw_accs.get(mode)
                if racc is None:
                    racc = self.raw_accs[mode] = self._new_accumulator(
                        len(self.templates), None, (1, ) + tuple(
                            maps[0].shape[-2:]), mode)
                racc.add(torch.tensor(rows), None,
                         torch.ones(len(rows), 1, *maps[0].shape[-2:]), raw,
                         torch.tensor(w, dtype=torch.float64))
        # ``acc`` stays the (first) rule's accumulator, as with one rule.
        self.acc = self.accs[self.pooling[0]]

    def _keeps_raw_visibility(self) -> bool:
        """Whether the raw maps' template visibility is pooled as well (a
        calibrated model scoring QAConv: the same on every rank)."""
        return self.pool_vis_range() is not None and self.needs_maps

    # -- evaluation ---------------------------------------------------------------
    def evaluate(self, size: int) -> Dict[str, float]:
        """Merge ranks, score the listed pairs and compute every metric (once
        per pooling rule; ``scores`` and ``roc_curves`` hold every rule's
        branches, suffixed like the keys)."""
        self._load_meta()
        out: Dict[str, float] = {}
        scores: Dict[str, np.ndarray] = {}
        curves: Dict[str, Any] = {}
        try:
            # Every rank runs the rules in the same order: their collectives
            # pair up.
            for mode in self.pooling:
                sfx = POOL_SUFFIX[mode]
                self.acc = self._allreduce_accumulator(self.accs.get(mode),
                                                       pooling=mode)
                self._raw_acc = self._allreduce_accumulator(
                    self.raw_accs.get(mode), pooling=mode) \
                    if self._keeps_raw_visibility() else None
                self.roc_curves = {}
                nonfinite = self._screen_nonfinite(self.acc)
                res = self._mask_nonfinite(self._compute(), nonfinite)
                out.update({self._suffixed(k, sfx): v for k, v in res.items()})
                scores.update({b + sfx: s for b, s in self.scores.items()})
                curves.update({b + sfx: c for b, c in self.roc_curves.items()})
            self.scores, self.roc_curves = scores, curves
            return self._name_global_branch(out)
        finally:
            self.acc = self._raw_acc = None
            self.accs, self.raw_accs = {}, {}
            self.reset()

    def _suffixed(self, key: str, suffix: str) -> str:
        """``{dataset}/{branch}/{metric}`` with ``suffix`` added to the branch."""
        parts = key.split('/')
        if suffix and len(parts) == 3 and parts[0] == self.dataset_name:
            parts[1] += suffix
        return '/'.join(parts)

    def _check_pairs_have_images(self) -> None:
        empty = self.acc.count[:len(self.templates)] == 0
        for rows, in ((self.pair_a, ), (self.pair_b, )):
            bad = empty[rows].nonzero().reshape(-1)
            if bad.numel():
                i = int(bad[0])
                raise DataFormatError(
                    self.pair_file, f'template {int(self.templates[rows[i]])} '
                    'got no image during evaluation (is the image folder '
                    'complete?)', record=f'line {i + 1}', field='template_id')

    def _compute(self) -> Dict[str, float]:
        self._check_pairs_have_images()
        self.pair_visibility = None
        labels = self.pair_label
        emb = self.acc.embeddings()
        cos = self._listed_scores(emb, None).numpy().astype(np.float64)
        scores = {'adaface': cos}
        want_q = 'qaconv' in self.branches or 'fused' in self.branches
        maps = vis = None
        if want_q and not self.has_matcher():
            self._log_once('nomatch', 'no model with a QAConv head is bound; '
                           'qaconv/fused branches skipped')
        elif want_q and not self.acc.has_maps:
            self._log_once('nomaps', 'predictions carry no feature_map; '
                           'qaconv/fused branches skipped')
        elif want_q:
            maps, vis = self.acc.maps(), self.acc.visibility()
            scores['qaconv'] = self._listed_scores(
                maps, vis, qaconv=True).numpy().astype(np.float64)
        stats = {b: impostor_stats(s, labels) for b, s in scores.items()}
        if 'qaconv' in scores:
            scores['fused'] = fuse_scores(
                [scores['adaface'], scores['qaconv']], self.fuse_weights,
                [stats['adaface'], stats['qaconv']])
            pair_means = self._pair_means(vis)
            self.pair_visibility_range = self.model_vis_range()
            self.pair_visibility = pair_means(self.pair_visibility_range)
            fv = self._fused_vis(scores, pair_means)
            if fv is not None:
                scores[FUSED_VIS] = fv
        out: Dict[str, float] = {}
        for b in tuple(self.branches) + (FUSED_VIS, ):
            if b in scores:
                out.update(self._roc_metrics(b, scores[b], labels, self.fars,
                                             self.far_rule))
        if self.probes is not None:
            out.update(self._identification(emb, maps, vis, stats))
        self.scores, self.labels = scores, labels
        return out

    def _pair_means(self, vis: torch.Tensor):
        """``vis_range -> [N, 2]`` mean visibility of both templates of each
        listed pair: of the pooled map (``vis``) when asked for the
        calibration it was pooled with, else of the raw maps' pooled
        visibility calibrated by the one asked for (None: raw). With the
        default raw pooling and the model's ``vis_range`` that is the map
        QAConv reads, the pooled map calibrated."""
        pooled_range = self.pool_vis_range()
        a, b = self.pair_a.numpy(), self.pair_b.numpy()

        def means(vis_range):
            if vis_range == pooled_range:
                t = vis
            else:
                raw = vis if self._raw_acc is None else \
                    self._raw_acc.visibility()
                t = self._calibrate(raw.double(), vis_range)
            tv = mean_visibility(t)
            return np.stack([tv[a], tv[b]], 1)

        return means

    def _listed_scores(self, feats: torch.Tensor, vis: Optional[torch.Tensor],
                       qaconv: bool = False) -> torch.Tensor:
        """Scores of the listed pairs (cosine, or QAConv with the bound model).

        Every rank cuts the pair list into the same canonical units (dense tiles
        and row-wise chunks, :func:`~oaml_mm.evaluation.functional.plan_pair_units`)
        and scores a contiguous share of whole units, so each pair is scored in the
        same block whatever the world size: 1 or N processes give identical scores.
        The gathered scores are put back in list order.
        """
        if qaconv and any(isinstance(m, _BatchNorm) and m.training
                          for m in self.model.modules()):
            # Batch-statistics BNs couple the pairs of one call: a dense tile would
            # not equal row-wise scoring, so keep the row-wise path.
            return self._match_pairs_distributed(
                feats, vis, self.pair_a, self.pair_b,
                calibrated=self.pool_vis_range() is not None)
        n = self.pair_a.numel()
        # Cosine tiles are at least COSINE_TILE: its dense product is too cheap
        # for small tiles to pay for their bookkeeping.
        if qaconv:
            plan = plan_pair_units(self.pair_a, self.pair_b, self.pair_tile,
                                   QACONV_MIN_FILL, self.pair_chunk)
            # The pooled maps are calibrated already.
            cal = self.pool_vis_range() is not None
            dense = self._matcher('match', cal)
            rowwise = self._matcher('match_pairs', cal)
            device = next(self.model.parameters()).device
        else:
            feats = F.normalize(feats.float(), dim=1)
            plan = plan_pair_units(self.pair_a, self.pair_b,
                                   max(self.pair_tile, COSINE_TILE),
                                   COSINE_MIN_FILL, 1 << 16)
            dense, rowwise, device = dot_all, dot_rows, feats.device
        rank, world = get_dist_info()
        shares = split_units(plan.cost, world)
        counts = [sum(u[2].numel() for u in plan.units[lo:hi])
                  for lo, hi in shares]
        bar = (self._bar(counts[rank], f'{self.dataset_name} QAConv pairs')
               if qaconv else None)
        with torch.no_grad():
            pos, local = score_units(
                plan, dense, rowwise, feats, vis, self.pair_a, self.pair_b,
                units=shares[rank], device=device,
                progress=None if bar is None else bar.update)
        if bar is not None:
            bar.close()
        # Every rank knows every share, so the positions need no gather.
        order = torch.cat([plan.positions(lo, hi) for lo, hi in shares])
        scores = torch.empty(n, dtype=torch.float32)
        scores[order] = self._gather_parts(local, counts)
        return scores

    def _score_matrix(self, branch: str, emb, maps, vis, probe_rows,
                      gallery_rows) -> np.ndarray:
        if branch == 'adaface':
            return (emb[probe_rows] @ emb[gallery_rows].T).double().numpy()
        # QAConv: whole 128-probe blocks split over ranks, 128 x 128 blocks like
        # the reference evaluator.
        p_n = probe_rows.numel()
        lo, hi = self._my_range(p_n, 128)
        empty = torch.empty(0, dtype=torch.int64)
        with torch.no_grad():
            local = match_all_then_pick(
                self._matcher('match', self.pool_vis_range() is not None),
                maps, vis, probe_rows[lo:hi], gallery_rows,
                empty, empty, block=128,
                device=next(self.model.parameters()).device)[0]
        return self._gather_ranges(local, p_n, 128).double().numpy()

    def _identification(self, emb, maps, vis, stats) -> Dict[str, float]:
        p_rows, p_subj = self.probes
        out: Dict[str, float] = {}
        branches = [b for b in ('adaface', 'qaconv') if b in stats]
        mats: Dict[str, List[np.ndarray]] = {b: [] for b in branches}
        for g_rows, _ in self.galleries:
            for b in branches:
                mats[b].append(self._score_matrix(b, emb, maps, vis, p_rows,
                                                  g_rows))
        if 'qaconv' in mats:
            mats['fused'] = [
                fuse_scores([a, q], self.fuse_weights,
                            [stats['adaface'], stats['qaconv']])
                for a, q in zip(mats['adaface'], mats['qaconv'])
            ]
        g_subj_all = np.concatenate([s for _, s in self.galleries])
        for b in self.branches:
            if b not in mats:
                continue
            p = f'{self.dataset_name}/{b}/1N_'
            closed = identification_1n(np.concatenate(mats[b], 1), p_subj,
                                       g_subj_all, self.ranks, fpirs=())
            for k in self.ranks:
                out[p + f'rank{k}'] = 100.0 * closed[f'rank{k}']
            per_gallery = [
                identification_1n(m, p_subj, s, ranks=(), fpirs=self.fpirs)
                for m, (_, s) in zip(mats[b], self.galleries)
            ]
            for f in self.fpirs:
                key = f'TPIR@FPIR={f:.0e}'
                vals = [r[key] for r in per_gallery if not np.isnan(r[key])]
                if vals:
                    out[p + key] = 100.0 * float(np.mean(vals))
        return out
