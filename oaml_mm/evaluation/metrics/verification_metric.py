"""10-fold verification on the ``.bin`` pair sets (LFW, CFP-FP, AgeDB-30, CALFW, CPLFW).

Protocol: insightface/AdaFace 10-fold (see
:mod:`oaml_mm.evaluation.functional.verification`) for the cosine branch; the QAConv
branch scores the two images of each pair with the model's occlusion-weighted
``match_pairs``; the fused branch adds the two after impostor z-normalisation.

The visibility ablation (``visibility_ablation=True``) answers the question the CPU
feasibility study (docs/synthface.md) left open, whether OAML's visibility map earns
its place: it re-scores the
QAConv branch with the true visibility and with none, and measures the occlusion
head's mean absolute error on the true masks' grid per occlusion type, the types
being whatever the data's side files name (SynthFace's ``<name>.types.txt``,
``VerificationBinDataset(side_files=True)``): no list of types lives in the code,
so a new type in the data gets its own ``MAE_{type}`` key.
"""
import zlib
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch
from mmengine.dist import all_gather_object, all_reduce

from oaml_mm.errors import DataFormatError
from oaml_mm.evaluation.functional import (FUSED_VIS, TemplateAccumulator,
                                           fuse_scores, impostor_stats,
                                           mean_visibility,
                                           verification_10fold,
                                           verification_10fold_scores,
                                           visibility_mae)
from oaml_mm.models.functional import resize_visibility
from oaml_mm.registry import METRICS
from .face_metric_base import BRANCHES, FaceMetricBase

__all__ = ['VerificationMetric']


@METRICS.register_module()
class VerificationMetric(FaceMetricBase):
    """10-fold verification accuracy of the AdaFace, QAConv and fused scores.

    Every sample needs ``pair_index``, ``pair_slot`` (0/1) and ``issame`` in its
    metainfo (``VerificationBinDataset`` sets them) and the prediction's
    ``embedding``; the QAConv/fused branches also need ``feature_map`` (set
    ``test_cfg=dict(return_feature_maps=True)`` in the model) and use ``visibility``
    when present. Without a bound model with a QAConv head those branches are
    skipped with a log line.

    Keys (accuracy, std and EER/AUC in percent, as papers report):
    ``{dataset}/{branch}/accuracy``, ``/std``, the mean best threshold named by its
    unit (``adaface/threshold_cos``: cosine; ``qaconv/threshold_qaconv``: QAConv
    score; ``fused/threshold_fused``: fused z-score), ``/AUC``, ``/EER`` and
    ``/TAR@FAR=..`` for ``fars``.
    After :meth:`evaluate` with ``visibility_ablation``, ``ablation_records``
    holds what the ablation measured: ``pred`` / ``true`` [2P, h, w] (the
    predicted map on the true masks' grid, and the true one; image ``2p + s`` is
    slot ``s`` of pair ``p``), ``types`` (per image), ``issame`` [P] and
    ``scores`` (``qaconv``, ``qaconv_gt_vis``, ``qaconv_no_vis``: [P] each); the
    occlusion report (``tools/analysis/occlusion_report.py``) is built on it.
    With ``visibility_ablation`` also ``{dataset}/qaconv_gt_vis/accuracy`` (QAConv
    with the true visibility), ``{dataset}/qaconv_no_vis/accuracy`` (with none; both
    with ``/std`` and ``/threshold_qaconv``) and ``{dataset}/visibility/MAE`` plus
    ``/MAE_{type}`` per occlusion type (the occlusion head's mean absolute error on
    the grid, a fraction in [0, 1]). With a visibility-aware fusion
    (``fusion_params``, or the tested checkpoint's: docs/evaluation.md,
    "Visibility-aware fusion") also ``{dataset}/fused_vis/accuracy``, ``/std``,
    ``/threshold_fused_vis`` (fitted log-odds), ``/AUC``, ``/EER`` and
    ``/TAR@FAR=..``. These extra names are not branches: the
    ``branches`` argument is unchanged. A branch fed a NaN/Inf embedding, map,
    visibility or score reports NaN for every key and ``/nonfinite_features``
    (images) or ``/nonfinite_scores`` (pairs), with a warning: never the 50 %
    a NaN embedding would otherwise score.

    Args:
        dataset_name (str): Key prefix, e.g. ``'lfw'``.
        branches (Sequence[str]): Subset of ``('adaface', 'qaconv', 'fused')``.
        fuse_weights (Sequence[float]): (adaface, qaconv) weights. Defaults to
            (0.5, 0.5).
        nrof_folds (int): Folds. Defaults to 10.
        fars (Sequence[float]): FARs for TAR@FAR keys. Defaults to () (the .bin
            sets have 3,000 impostor pairs at most).
        select_by_name (bool): Only count samples whose ``dataset_name`` metainfo
            equals ``dataset_name``, so several metrics can share one
            ``ConcatDataset`` of ``.bin`` sets. Defaults to False.
        visibility_ablation (bool): Add the ablation keys above. Every sample must
            then carry ``gt_visibility`` and ``occlusion_type`` (SynthFace
            ``.bin`` files read with ``side_files=True``). Defaults to False.
        **kwargs: See :class:`FaceMetricBase`.

    Example:
        >>> val_evaluator = dict(type='VerificationMetric', dataset_name='lfw',
        ...                      branches=('adaface', 'qaconv', 'fused'))
        >>> # SynthFace: three .bin sets in one ConcatDataset, with the ablation
        >>> test_evaluator = [
        ...     dict(type='VerificationMetric', dataset_name=name,
        ...          select_by_name=True, visibility_ablation=True)
        ...     for name in ('clean', 'masked', 'occluded')]
    """

    def __init__(self,
                 dataset_name: str = 'lfw',
                 branches: Sequence[str] = BRANCHES,
                 fuse_weights: Sequence[float] = (0.5, 0.5),
                 nrof_folds: int = 10,
                 fars: Sequence[float] = (),
                 select_by_name: bool = False,
                 visibility_ablation: bool = False,
                 **kwargs) -> None:
        super().__init__(dataset_name, branches, fuse_weights, **kwargs)
        self.nrof_folds = nrof_folds
        self.fars = tuple(fars)
        self.select_by_name = bool(select_by_name)
        self.visibility_ablation = bool(visibility_ablation)
        self.ablation_records: Optional[dict] = None
        self._new_state()

    def _new_state(self) -> None:
        self.acc: Optional[TemplateAccumulator] = None
        self.issame = torch.full((0, ), -1, dtype=torch.int8)
        # Ablation store, one row per image: true visibility and type code
        # (the CRC-32 of the type's name, reducible over ranks by a max).
        self.gt_vis = torch.zeros(0, 0)
        self.type_code = torch.full((0, ), -1, dtype=torch.int64)
        self.type_names: Dict[int, str] = {}
        self._saw_vis = False

    def reset(self) -> None:
        super().reset()
        self._new_state()

    def _ensure(self, rows: int, emb_dim: int, map_shape) -> None:
        if self.acc is None:
            self.acc = self._new_accumulator(
                max(rows, 64), emb_dim, map_shape if self.needs_maps else None)
        elif rows > self.acc.num_templates:
            self.acc.grow(max(rows, 2 * self.acc.num_templates))
        pairs = (self.acc.num_templates + 1) // 2
        if pairs > self.issame.numel():
            pad = torch.full((pairs - self.issame.numel(), ), -1,
                             dtype=torch.int8)
            self.issame = torch.cat([self.issame, pad])

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Fold one batch of predictions into the per-image store."""
        rows, embs, maps, vis, same = [], [], [], [], []
        gts, codes = [], []
        for s in self._samples(data_samples):
            if self.select_by_name and \
                    s.get('dataset_name') != self.dataset_name:
                continue
            if 'pair_index' not in s or 'pair_slot' not in s:
                raise DataFormatError(
                    s.get('img_path', self.dataset_name),
                    'sample has no pair_index/pair_slot metainfo (use '
                    'VerificationBinDataset)', field='pair_index')
            rows.append(2 * int(s['pair_index']) + int(s['pair_slot']))
            same.append(int(bool(s.get('issame', False))))
            embs.append(torch.as_tensor(s['embedding']).float().reshape(-1))
            if self.needs_maps and 'feature_map' in s:
                maps.append(torch.as_tensor(s['feature_map']))
                v = s.get('visibility')
                self._saw_vis |= v is not None
                vis.append(torch.ones(1, *maps[-1].shape[1:])
                           if v is None else torch.as_tensor(v).float())
            if self.visibility_ablation:
                gt, code = self._ablation_fields(s)
                gts.append(gt)
                codes.append(code)
        if not rows:
            return
        map_shape = tuple(maps[0].shape) if maps else None
        self._ensure(max(rows) + 1, embs[0].numel(), map_shape)
        r = torch.tensor(rows)
        self.acc.add(r, torch.stack(embs),
                     torch.stack(maps) if maps and self.acc.has_maps
                     else None,
                     torch.stack(vis) if vis else None)
        self.issame[r // 2] = torch.tensor(same, dtype=torch.int8)
        if gts:
            self._store_ablation(r, torch.stack(gts), torch.tensor(codes))

    def _ablation_fields(self, s: dict):
        where = s.get('img_path', self.dataset_name)
        if s.get('gt_visibility') is None or 'occlusion_type' not in s:
            raise DataFormatError(
                where, 'visibility_ablation needs gt_visibility and '
                'occlusion_type on every sample (read SynthFace .bin files with '
                'VerificationBinDataset(side_files=True))',
                record=s.get('pair_index'), field='occlusion_type')
        t = str(s['occlusion_type'])
        code = zlib.crc32(t.encode('utf-8'))
        if self.type_names.setdefault(code, t) != t:
            raise DataFormatError(
                where, f'occlusion types {t!r} and {self.type_names[code]!r} '
                'share a CRC-32 code; rename one', field='occlusion_type')
        return torch.as_tensor(s['gt_visibility']).float().reshape(-1), code

    def _store_ablation(self, rows: torch.Tensor, gt: torch.Tensor,
                        codes: torch.Tensor) -> None:
        need = int(rows.max()) + 1
        if need > self.gt_vis.shape[0] or self.gt_vis.shape[1] != gt.shape[1]:
            size = max(need, 2 * self.gt_vis.shape[0], 64)
            grown = torch.zeros(size, gt.shape[1])
            grown[:self.gt_vis.shape[0], :self.gt_vis.shape[1]] = self.gt_vis
            self.gt_vis = grown
            code = torch.full((size, ), -1, dtype=torch.int64)
            code[:self.type_code.numel()] = self.type_code
            self.type_code = code
        self.gt_vis[rows] = gt
        self.type_code[rows] = codes

    def evaluate(self, size: int) -> Dict[str, float]:
        """Merge the ranks' stores and compute every branch's metrics."""
        self.acc = self._allreduce_accumulator(self.acc)
        issame = self.issame.to(torch.int32)
        n = torch.tensor([issame.numel()])
        all_reduce(n, op='max')
        if int(n) > issame.numel():
            issame = torch.cat([issame, torch.full((int(n) - issame.numel(), ),
                                                   -1, dtype=torch.int32)])
        all_reduce(issame, op='max')
        if self.visibility_ablation:
            self._reduce_ablation()
        saw = torch.tensor([int(self._saw_vis)])
        all_reduce(saw, op='max')
        self._saw_vis = bool(saw)
        nonfinite = self._screen_nonfinite(self.acc)
        metrics = self._mask_nonfinite(self._compute(issame), nonfinite)
        self.reset()
        return self._name_global_branch(metrics)

    def _reduce_ablation(self) -> None:
        """Every image sits on one rank: a sum (visibility) and a max (type code)
        of zero-/minus-one-padded stores rebuild the whole table."""
        shape = torch.tensor(list(self.gt_vis.shape))
        all_reduce(shape, op='max')
        rows, cells = int(shape[0]), int(shape[1])
        vis = torch.zeros(rows, cells)
        vis[:self.gt_vis.shape[0], :self.gt_vis.shape[1]] = self.gt_vis
        code = torch.full((rows, ), -1, dtype=torch.int64)
        code[:self.type_code.numel()] = self.type_code
        all_reduce(vis)
        all_reduce(code, op='max')
        self.gt_vis, self.type_code = vis, code
        names: Dict[int, str] = {}
        for part in all_gather_object(self.type_names):
            names.update(part)
        self.type_names = names

    def _compute(self, issame_t: torch.Tensor) -> Dict[str, float]:
        count = self.acc.count
        seen = (count > 0).nonzero().reshape(-1)
        if seen.numel() == 0:
            raise DataFormatError(self.dataset_name, 'no samples were evaluated')
        num_pairs = int(seen.max()) // 2 + 1
        missing = (count[:2 * num_pairs] == 0).nonzero().reshape(-1)
        if missing.numel():
            r = int(missing[0])
            raise DataFormatError(
                self.dataset_name, f'pair {r // 2} has no image in slot {r % 2} '
                f'({missing.numel()} images missing)', record=r // 2,
                field='pair_slot')
        issame = issame_t[:num_pairs].numpy().astype(bool)
        emb = (self.acc.feature_sums()[:2 * num_pairs] /
               count[:2 * num_pairs, None]).float().numpy()
        out: Dict[str, float] = {}
        cos = np.sum(emb[0::2] * emb[1::2], 1)
        scores = {'adaface': cos}
        self.pair_visibility = None
        self.pair_visibility_range = None
        if 'adaface' in self.branches:
            res = verification_10fold(emb, issame, self.nrof_folds)
            out.update(self._acc_keys('adaface', res))
            out.update(self._roc_metrics('adaface', cos, issame, self.fars,
                                         'closest'))
        want_q = 'qaconv' in self.branches or 'fused' in self.branches
        if want_q and not self.has_matcher():
            self._log_once('nomatch', 'no model with a QAConv head is bound; '
                           'qaconv/fused branches skipped')
        elif want_q and not self.acc.has_maps:
            self._log_once('nomaps', 'predictions carry no feature_map (set '
                           "model test_cfg return_feature_maps=True); "
                           'qaconv/fused branches skipped')
        elif want_q:
            rows = torch.arange(num_pairs)
            q = self._match_pairs_distributed(
                self.acc.maps(), self.acc.visibility(), 2 * rows,
                2 * rows + 1).numpy().astype(np.float64)
            scores['qaconv'] = q
            if 'qaconv' in self.branches:
                res = verification_10fold_scores(q, issame, self.nrof_folds)
                out.update(self._acc_keys('qaconv', res))
                out.update(self._roc_metrics('qaconv', q, issame, self.fars,
                                             'closest'))
            if 'fused' in self.branches:
                stats = [impostor_stats(cos, issame), impostor_stats(q, issame)]
                f = fuse_scores([cos, q], self.fuse_weights, stats)
                res = verification_10fold_scores(f, issame, self.nrof_folds)
                out.update(self._acc_keys('fused', res))
                out.update(self._roc_metrics('fused', f, issame, self.fars,
                                             'closest'))
            pair_means = self._pair_means(num_pairs)
            self.pair_visibility_range = self.model_vis_range()
            self.pair_visibility = pair_means(self.pair_visibility_range)
            fv = self._fused_vis(scores, pair_means)
            if fv is not None:
                scores[FUSED_VIS] = fv
                res = verification_10fold_scores(fv, issame, self.nrof_folds)
                out.update(self._acc_keys(FUSED_VIS, res))
                out.update(self._roc_metrics(FUSED_VIS, fv, issame, self.fars,
                                             'closest'))
            if self.visibility_ablation:
                out.update(self._ablation(num_pairs, issame, scores))
        self.scores = scores
        self.labels = issame
        return out

    def _pair_means(self, num_pairs: int):
        """``vis_range -> [P, 2]`` mean visibility of both images of each pair
        on their map calibrated by ``vis_range`` (None when no prediction
        carried visibility). The store keeps each image's raw map (one image
        per row: nothing is pooled), which the matcher calibrates itself and
        the visibility error scores."""
        raw = self.acc.visibility()[:2 * num_pairs] if self._saw_vis else None

        def means(vis_range):
            if raw is None:
                return None
            v = mean_visibility(self._calibrate(raw.double(), vis_range))
            return np.stack([v[0::2], v[1::2]], 1)

        return means

    def _ablation(self, num_pairs: int, issame: np.ndarray,
                  scores: Dict[str, np.ndarray]) -> Dict[str, float]:
        """QAConv with the true and with no visibility; the head's visibility error."""
        n = 2 * num_pairs
        code = self.type_code[:n]
        if self.gt_vis.shape[0] < n or bool((code < 0).any()):
            raise DataFormatError(
                self.dataset_name, 'visibility_ablation: some images carried no '
                'true visibility', field='gt_visibility')
        pred = self.acc.visibility()[:n]
        side = int(round(self.gt_vis.shape[1]**0.5))
        true = self.gt_vis[:n].reshape(n, 1, side, side)
        rows = torch.arange(num_pairs)
        out: Dict[str, float] = {}
        for name, v in (('qaconv_gt_vis', true), ('qaconv_no_vis', None)):
            q = self._match_pairs_distributed(
                self.acc.maps()[:n], v, 2 * rows,
                2 * rows + 1).numpy().astype(np.float64)
            scores[name] = q
            out.update(self._acc_keys(
                name, verification_10fold_scores(q, issame, self.nrof_folds)))
        types = [self.type_names[int(c)] for c in code]
        # Scored on the true masks' grid: a finer prediction (maps of an earlier
        # stage) is averaged onto it.
        pred = resize_visibility(pred.reshape(n, 1, *pred.shape[-2:]), side)
        mae = visibility_mae(pred.numpy(), true.numpy(), types)
        #: What the ablation measured, per image and per pair, for reports
        #: built on it (``oaml_mm.visualization.occlusion_report``).
        self.ablation_records = dict(
            pred=pred[:, 0].float().numpy(), true=true[:, 0].numpy(),
            types=types, issame=np.asarray(issame, bool),
            scores={k: scores[k] for k in ('qaconv', 'qaconv_gt_vis',
                                           'qaconv_no_vis') if k in scores})
        p = f'{self.dataset_name}/visibility/'
        out[p + 'MAE'] = mae.pop('all')
        out.update({p + f'MAE_{t}': v for t, v in mae.items()})
        return out

    def _acc_keys(self, branch: str, res: dict) -> Dict[str, float]:
        """Accuracy, std and the mean best threshold, named by its unit.

        The 10-fold protocol thresholds the cosine branch on the squared L2
        distance ``d`` of unit embeddings; it is reported as the cosine
        ``1 - d / 2`` (what :class:`~oaml_mm.apis.FaceRecognizer` compares with),
        under ``threshold_cos``. QAConv scores (also with true or no
        visibility) go under ``threshold_qaconv``, the fused z-score under
        ``threshold_fused``, the visibility-aware fusion's log-odds under
        ``threshold_fused_vis``: one unit per column of the ``tools/test.py``
        table.
        """
        p = f'{self.dataset_name}/{branch}/'
        if branch == 'adaface':
            thr = {'threshold_cos': 1.0 - float(res['threshold']) / 2.0}
        elif branch in ('fused', FUSED_VIS):
            thr = {f'threshold_{branch}': float(res['threshold'])}
        else:
            thr = {'threshold_qaconv': float(res['threshold'])}
        return {
            p + 'accuracy': 100.0 * res['accuracy'],
            p + 'std': 100.0 * res['std'],
            **{p + k: v for k, v in thr.items()},
        }
