"""Shared machinery of the face metrics: the bound matcher, DDP merging, pair splits.

mmengine's :class:`~mmengine.evaluator.BaseMetric` gathers every ``process`` result to
rank 0. Face benchmarks cannot afford that for feature maps (IJB-C: 469k images x
25k values), so these metrics keep per-rank *accumulators* with one row per template
(or per image for the ``.bin`` sets), sum them across ranks in chunks, split the listed
pairs over the ranks and gather only the scores. Every rank then computes the same
numbers, so single- and multi-process runs agree.

The matcher comes from the model: :class:`~oaml_mm.engine.runner.FaceValLoop` /
``FaceTestLoop`` call :meth:`FaceMetricBase.bind_model` before evaluating.
"""
import functools
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.dist import all_gather, all_reduce, get_dist_info
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from oaml_mm.errors import ConfigError
from oaml_mm.evaluation.functional import (BRANCHES, FUSED_VIS,
                                           TemplateAccumulator,
                                           apply_visibility_fusion, auc,
                                           check_visibility_fusion, eer,
                                           fusion_vis_range, roc_curve,
                                           tar_at_far)

__all__ = ['FaceMetricBase', 'BRANCHES']

# Which accumulated features each reported branch reads; the other rows
# (qaconv, its visibility-ablation variants, the visibility error) read maps.
_FEATURES_OF = {'adaface': ('embedding', ),
                'fused': ('embedding', 'feature_map'),
                FUSED_VIS: ('embedding', 'feature_map')}


def _to_dict(sample: Any) -> dict:
    if isinstance(sample, dict):
        return sample
    return sample.to_dict()


class FaceMetricBase(BaseMetric):
    """Base of :class:`VerificationMetric` and :class:`IJBMetric`.

    Args:
        dataset_name (str): First part of every key ``{dataset}/{branch}/{metric}``.
        branches (Sequence[str]): Any of ``'adaface'``, ``'qaconv'``, ``'fused'``.
        fuse_weights (Sequence[float]): Weights of (adaface, qaconv) in the fused
            score, applied after impostor z-normalisation. Defaults to (0.5, 0.5).
        pair_chunk (int): Pairs per QAConv matcher call. Defaults to 1024.
        map_dtype (str): Storage of the pooled feature maps. Defaults to 'float16'.
        progress (bool): Show a tqdm bar (rank 0) while scoring pairs.
        fusion_params (dict, optional): A visibility-aware fusion fitted on a
            calibration split
            (:func:`~oaml_mm.evaluation.functional.fit_visibility_fusion`);
            adds the ``{dataset}/fused_vis/...`` keys. None: the one of the
            tested checkpoint, when it has one
            (:meth:`set_fusion_params`, called by ``ThresholdCalibrationHook``),
            else no such keys.
        collect_device (str): Kept for mmengine compatibility.
    """

    # Keys carry the data set name already; the prefix is unused (set to
    # silence mmengine's warning).
    default_prefix: Optional[str] = 'face'

    def __init__(self,
                 dataset_name: str,
                 branches: Sequence[str] = BRANCHES,
                 fuse_weights: Sequence[float] = (0.5, 0.5),
                 pair_chunk: int = 1024,
                 map_dtype: str = 'float16',
                 progress: bool = True,
                 fusion_params: Optional[dict] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        bad = [b for b in branches if b not in BRANCHES]
        if bad:
            raise ConfigError(f'{type(self).__name__}: unknown branches {bad}; '
                              f'choose from {BRANCHES}')
        if len(fuse_weights) != 2:
            raise ConfigError('fuse_weights must be (adaface, qaconv) weights, '
                              f'got {fuse_weights}')
        self.dataset_name = dataset_name
        self.branches = tuple(branches)
        self.fuse_weights = tuple(float(w) for w in fuse_weights)
        self.pair_chunk = int(pair_chunk)
        self.map_dtype = getattr(torch, map_dtype)
        self.progress = progress
        self.model = None
        self.dataset_size: Optional[int] = None
        self.roc_curves: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        self.fusion_params: Optional[dict] = None
        self._fusion_given = fusion_params is not None
        if fusion_params is not None:
            self.fusion_params = check_visibility_fusion(
                dict(fusion_params),
                f'{type(self).__name__}({dataset_name!r}).fusion_params')
        #: ``[N, 2]`` mean visibility of both faces (images or templates) of
        #: each scored pair, of the map the matcher reads (the prediction
        #: calibrated by the bound model's ``vis_range``), kept after
        #: ``evaluate`` like ``scores``; None when the predictions carried no
        #: visibility.
        self.pair_visibility: Optional[np.ndarray] = None
        #: The calibration ``pair_visibility`` is the mean of (None: raw map).
        self.pair_visibility_range: Optional[Tuple[float, float]] = None
        self._seen = 0
        self._warned = set()

    # -- wiring ---------------------------------------------------------------
    def bind_model(self, model: Optional[torch.nn.Module]) -> None:
        """Give the metric the (unwrapped) model whose ``match_pairs`` scores QAConv."""
        self.model = model

    def global_branch_name(self) -> str:
        """Name of the global (embedding) branch in the keys: the bound model's
        margin head's ``branch_name`` (``'arcface'`` for an ``ArcFaceHead``), else
        ``'adaface'``."""
        head = getattr(self.model, 'head', None)
        return getattr(head, 'branch_name', 'adaface')

    def _name_global_branch(self, metrics: Dict[str, float]) -> Dict[str, float]:
        """The metrics with every ``{dataset}/adaface*/...`` key also under the
        margin head's name (``lfw/arcface/accuracy``); the ``adaface`` keys stay as
        aliases, so ``save_best`` and scripts written for them keep working."""
        name = self.global_branch_name()
        if name == 'adaface':
            return metrics
        out = {}
        for k, v in metrics.items():
            parts = k.split('/')
            if len(parts) >= 3 and (parts[1] == 'adaface'
                                    or parts[1].startswith('adaface_')):
                parts[1] = name + parts[1][len('adaface'):]
                out['/'.join(parts)] = v
        out.update(metrics)
        return out

    def set_fusion_params(self, params: Optional[dict],
                          from_checkpoint: bool = False) -> None:
        """Use a visibility-aware fusion for the ``fused_vis`` keys.

        Args:
            params (dict, optional): See ``fusion_params``; None removes it.
            from_checkpoint (bool): The params come from the tested checkpoint:
                they do not replace ones given to the constructor.

        Raises:
            ConfigError: Malformed params (the message names the field).
        """
        if from_checkpoint and self._fusion_given:
            return
        self.fusion_params = None if params is None else \
            check_visibility_fusion(dict(params), f'{self.dataset_name}: '
                                    'visibility fusion params')

    def model_vis_range(self) -> Optional[Tuple[float, float]]:
        """The bound model's one calibration of its predicted map
        (``OAMLRecognizer.vis_range``; None: none, or no model)."""
        return getattr(self.model, 'vis_range', None)

    def pool_vis_range(self) -> Optional[Tuple[float, float]]:
        """The calibration each image's map goes through before templates
        pool it (``OAMLRecognizer.pool_vis_range``; None: the raw maps are
        pooled and the matcher calibrates the pooled map)."""
        return getattr(self.model, 'pool_vis_range', None)

    def _calibrate(self, vis: Optional[torch.Tensor],
                   vis_range: Optional[Tuple[float, float]] = None
                   ) -> Optional[torch.Tensor]:
        """``vis`` stretched by ``vis_range`` (None: unchanged)."""
        from oaml_mm.models.functional import calibrate_visibility
        return calibrate_visibility(vis, vis_range)

    def _matcher(self, name: str, calibrated: bool) -> Callable:
        """The bound model's ``match`` / ``match_pairs``; with ``calibrated``
        told that the maps are calibrated already (pooled templates)."""
        fn = getattr(self.model, name)
        return functools.partial(fn, calibrated=True) if calibrated else fn

    def _fused_vis(self, scores: Dict[str, np.ndarray],
                   pair_means: Callable[[Optional[Tuple[float, float]]],
                                        Optional[np.ndarray]]
                   ) -> Optional[np.ndarray]:
        """The visibility-aware fused scores of the pairs, when its params are
        known (None otherwise).

        ``pair_means(vis_range)`` gives the ``[N, 2]`` mean visibility of the
        pairs' faces on the map calibrated by ``vis_range``; it is asked for
        the map the params were fitted on (their ``vis_range``; raw for
        params fitted before it was recorded), so old calibrations score as
        before. Faces without predicted visibility count as fully visible, as
        the QAConv matcher treats them."""
        if self.fusion_params is None or 'qaconv' not in scores:
            return None
        n = scores['adaface'].shape[0]
        vis = pair_means(fusion_vis_range(self.fusion_params))
        vis = np.ones((n, 2)) if vis is None else vis
        return apply_visibility_fusion(self.fusion_params, scores['adaface'],
                                       scores['qaconv'], vis[:, 0], vis[:, 1])

    def set_dataset_size(self, size: int) -> None:
        """Number of samples of the data set; lets DDP padding be recognised."""
        self.dataset_size = int(size)

    @property
    def needs_maps(self) -> bool:
        return 'qaconv' in self.branches or 'fused' in self.branches

    def has_matcher(self) -> bool:
        m = self.model
        return m is not None and callable(getattr(m, 'match_pairs', None)) and \
            getattr(m, 'qaconv_head', True) is not None

    def _log_once(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            print_log(f'{self.dataset_name}: {msg}', logger='current')

    def _keep_sample(self) -> bool:
        """False for the samples DDP's padding repeats (position >= data set size).

        mmengine's ``DefaultSampler`` gives rank r the positions r, r+W, r+2W, ...
        of the padded index list; positions past the data set are repeats.
        """
        rank, world = get_dist_info()
        pos = self._seen * world + rank
        self._seen += 1
        return self.dataset_size is None or pos < self.dataset_size

    def _samples(self, data_samples: Sequence[Any]):
        for s in data_samples:
            if self._keep_sample():
                yield _to_dict(s)

    # -- distributed helpers ---------------------------------------------------
    @staticmethod
    def _world() -> Tuple[int, int]:
        return get_dist_info()

    def _allreduce_accumulator(self, acc: Optional[TemplateAccumulator],
                               chunk_rows: int = 2048,
                               pooling: str = 'mean') -> TemplateAccumulator:
        """Sum per-rank accumulators, chunk by chunk (bounded memory).

        Ranks agree first on the structure (rows, embedding size, map shape): a
        rank that saw no image, or no map, contributes empty rows. ``pooling``
        is the rule of ``acc`` (every rank passes the same, so a rank without an
        accumulator builds one with the same tensors).

        Returns:
            TemplateAccumulator: The merged accumulator (same on every rank).
        """
        vec = torch.zeros(5, dtype=torch.int64)
        if acc is not None:
            vec[0] = acc.num_templates
            vec[1] = acc.emb_dim or 0
            if acc.map_shape is not None:
                vec[2:] = torch.tensor(acc.map_shape)
        all_reduce(vec, op='max')
        n, d = int(vec[0]), int(vec[1])
        shape = tuple(int(x) for x in vec[2:]) if vec[2] > 0 else None
        if acc is None or (acc.emb_dim or 0) != d or acc.map_shape != shape:
            fresh = self._new_accumulator(n, d or None, shape, pooling)
            if acc is not None:
                fresh.merge_(acc)
            acc = fresh
        acc.grow(n)
        _, world = get_dist_info()
        if world == 1:
            return acc
        # Integer fixed-point sums: the reduction is exact in any order, so the
        # merged templates equal a 1-process run's bit for bit.
        for t in acc.sum_tensors():
            for s in range(0, t.shape[0], chunk_rows):
                part = t[s:s + chunk_rows].clone()
                all_reduce(part)
                t[s:s + chunk_rows] = part
        return acc

    def _new_accumulator(self, num_templates: int, emb_dim: Optional[int],
                         map_shape: Optional[Tuple[int, int, int]],
                         pooling: str = 'mean') -> TemplateAccumulator:
        """An exact accumulator (order- and split-independent sums)."""
        return TemplateAccumulator(num_templates, emb_dim, map_shape,
                                   self.map_dtype, exact=True, pooling=pooling)

    @staticmethod
    def _my_range(n: int, align: int = 1) -> Tuple[int, int]:
        """This rank's contiguous share of ``0..n``, cut at multiples of ``align``.

        Cutting at the blocks a caller scores (``align``) keeps every block the
        same whatever the world size, so the scores are too.
        """
        rank, world = get_dist_info()
        blocks = (n + align - 1) // align
        per = (blocks + world - 1) // world
        return min(rank * per * align, n), min((rank + 1) * per * align, n)

    @staticmethod
    def _gather_parts(local: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
        """Concatenate every rank's ``local`` (rank order); ``counts[r]`` rows each.

        Every rank knows ``counts`` (the split is a pure function of the work), so
        the parts are padded to the largest and cut back after the gather.
        """
        _, world = get_dist_info()
        if world == 1:
            return local
        per = max(max(counts), 1)
        padded = local.new_zeros((per, ) + tuple(local.shape[1:]))
        padded[:local.shape[0]] = local
        parts = all_gather(padded)
        return torch.cat([p[:c].cpu() for p, c in zip(parts, counts)])

    def _gather_ranges(self, local: torch.Tensor, n: int,
                       align: int = 1) -> torch.Tensor:
        """Concatenate every rank's :meth:`_my_range` slice of an ``[n, ...]``
        result."""
        _, world = get_dist_info()
        blocks = (n + align - 1) // align
        per = (blocks + world - 1) // world * align
        counts = [max(0, min((r + 1) * per, n) - min(r * per, n))
                  for r in range(world)]
        return self._gather_parts(local, counts)

    def _match_pairs_distributed(self, maps: torch.Tensor,
                                 vis: Optional[torch.Tensor],
                                 idx_a: torch.Tensor,
                                 idx_b: torch.Tensor,
                                 calibrated: bool = False) -> torch.Tensor:
        """QAConv scores of the listed pairs, the pairs split over the ranks.

        Ranks take whole ``pair_chunk`` calls, so each call holds the same pairs
        whatever the world size. ``calibrated``: ``vis`` is calibrated already
        (pooled templates), the matcher does not stretch it again.
        """
        from oaml_mm.evaluation.functional import match_listed_pairs
        n = idx_a.numel()
        lo, hi = self._my_range(n, self.pair_chunk)
        device = next(self.model.parameters()).device
        bar = self._bar(hi - lo, f'{self.dataset_name} QAConv pairs')
        with torch.no_grad():
            local = match_listed_pairs(
                self._matcher('match_pairs', calibrated), maps, vis,
                idx_a[lo:hi], idx_b[lo:hi],
                chunk=self.pair_chunk, device=device,
                progress=None if bar is None else bar.update)
        if bar is not None:
            bar.close()
        return self._gather_ranges(local, n, self.pair_chunk)

    def _bar(self, total: int, desc: str):
        rank, _ = get_dist_info()
        if not self.progress or rank != 0:
            return None
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, unit='pair', unit_scale=True,
                    mininterval=2.0, leave=False)

    # -- non-finite features -----------------------------------------------------
    def _screen_nonfinite(self, acc: Optional[TemplateAccumulator]
                          ) -> Dict[str, int]:
        """Rows (images for the ``.bin`` sets, templates for IJB) that received a
        NaN/Inf embedding (or norm) / feature map (or visibility).

        A NaN embedding makes every comparison false, so the 10-fold protocol
        reports 50 % and ROC-based figures a near-chance but plausible number.
        The accumulator pooled such images as zeros, so the scoring code runs on
        finite numbers; :meth:`_mask_nonfinite` then replaces every figure that
        used them with NaN.

        Returns:
            dict: ``{'embedding': n, 'feature_map': n}``; only non-zero counts.
        """
        return {} if acc is None else acc.nonfinite_rows()

    def _mask_nonfinite(self, metrics: Dict[str, float],
                        counts: Dict[str, int]) -> Dict[str, float]:
        """Replace every figure computed from non-finite inputs with NaN.

        A branch is affected when a feature it reads was non-finite (``adaface``:
        embeddings; ``qaconv`` and the ablation rows: feature maps and
        visibility; ``fused``: both) or when its own pair scores are (a QAConv
        head with NaN weights). Its keys become NaN and
        ``{dataset}/{branch}/nonfinite_features`` (rows from ``counts``) or
        ``/nonfinite_scores`` (pairs) is added; its ``scores`` and ROC curve
        are dropped so that no threshold is calibrated and no curve plotted
        from them. A warning names the counts.

        Args:
            metrics (dict): ``{dataset}/{branch}/{metric}`` of one evaluation.
            counts (dict): What :meth:`_screen_nonfinite` returned.

        Returns:
            dict: The metrics, masked.
        """
        scores = getattr(self, 'scores', None) or {}
        branches = {k.split('/')[1] for k in metrics
                    if k.startswith(self.dataset_name + '/')
                    and k.count('/') == 2} | set(scores)
        bad: Dict[str, Tuple[str, int]] = {}
        for b in sorted(branches):
            kinds = _FEATURES_OF.get(b, ('feature_map', ))
            n = sum(counts.get(k, 0) for k in kinds)
            if n:
                bad[b] = ('nonfinite_features', n)
            elif b in scores and not np.isfinite(scores[b]).all():
                bad[b] = ('nonfinite_scores',
                          int((~np.isfinite(scores[b])).sum()))
        if not bad:
            return metrics
        # The fused scores are made of the other two.
        for fused in ('fused', FUSED_VIS):
            if fused in branches and fused not in bad:
                for src in ('adaface', 'qaconv'):
                    if src in bad:
                        bad[fused] = bad[src]
        out = {}
        for k, v in metrics.items():
            parts = k.split('/')
            hit = len(parts) == 3 and parts[0] == self.dataset_name and \
                parts[1] in bad
            out[k] = float('nan') if hit else v
        for b, (what, n) in bad.items():
            out[f'{self.dataset_name}/{b}/{what}'] = float(n)
            if b in scores:
                scores[b] = np.full(np.shape(scores[b]), np.nan)
            self.roc_curves.pop(b, None)
        rows = ', '.join(f'{n} with a non-finite {k.replace("_", " ")}'
                         for k, n in counts.items()) or 'none of the features'
        print_log(
            f'{self.dataset_name}: non-finite inputs ({rows}; rows are '
            f'images or templates); branches {sorted(bad)} are reported as NaN',
            logger='current', level=logging.WARNING)
        return out

    # -- shared metric blocks ---------------------------------------------------
    def _roc_metrics(self, branch: str, scores: np.ndarray, labels: np.ndarray,
                     fars: Sequence[float], rule: str) -> Dict[str, float]:
        out = {}
        prefix = f'{self.dataset_name}/{branch}/'
        for far, tar in tar_at_far(scores, labels, fars, rule=rule).items():
            out[prefix + f'TAR@FAR={far:.0e}'] = 100.0 * tar
        out[prefix + 'AUC'] = 100.0 * auc(scores, labels)
        out[prefix + 'EER'] = 100.0 * eer(scores, labels)
        fpr, tpr, _ = roc_curve(scores, labels)
        self.roc_curves[branch] = (fpr, tpr)
        return out

    def compute_metrics(self, results: List) -> Dict[str, float]:
        # Unused: evaluate() is overridden to merge accumulators, not results.
        return {}

    def reset(self) -> None:
        """Forget everything processed so far (called after every evaluation)."""
        self._seen = 0
        self.results.clear()
