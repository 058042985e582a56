"""IJB template pooling of embeddings and of visibility-weighted feature maps.

Embeddings follow the IJB-B/IJB-C 1:1 protocol of insightface's ``IJB_11.py`` (also
AdaFace's): each image feature keeps its norm (flip fusion happens in the model), the
features of one media (a still or the frames of one video) are averaged, the media
means of a template are summed and the sum is L2-normalised.

QAConv needs one feature map per template. OAML adds a visibility map per image, so a
template map is pooled per spatial cell, each image weighted by its media weight
(``1 / images in its media``, as above) times its visibility at that cell:

    M_t[:, r] = sum_i w_i v_i[r] x_i[:, r] / sum_i w_i v_i[r]     (then L2 over
    channels) V_t[r]    = sum_i w_i v_i[r] / sum_i w_i

An occluded cell therefore borrows its content from the images where it is visible, and
the template visibility says how much evidence each cell has. With all-ones visibility
and one image per template this is the image's own map and visibility.

:class:`TemplateAccumulator` computes both while images stream in, holding only one
row per template (never the image maps). The metrics use its exact storage: each
image's contribution is rounded to a fixed-point grid and summed as integers, so a
template pools to the same bits whatever order its images come in and however they
are split over processes (IJB-C's 23,124 templates x 512 x 7 x 7: 4.6 GB). Galleries
keep the map as a running weighted mean in fp16 (1.16 GB for the same size).

``pooling='visibility'`` (see docs/evaluation.md, "Template pooling") goes one step
further, so that a clean image of a template is not diluted by an occluded one:

* each image's *embedding* weight is its media weight times its mean visibility
  ``vbar_i`` (the norm-keeping features and the media-then-template rule stay), so
  a mostly occluded image barely moves the template embedding;
* the map weights are floored, ``a_i[r] = w_i max(v_i[r], VIS_FLOOR)``: where every
  image of a template is occluded at a cell the floor makes the cell the plain
  (media-weighted) mean instead of an empty vector;
* the template visibility is the visibility-weighted mean of the images'
  visibility, ``V_t[r] = sum_i a_i[r] v_i[r] / sum_i a_i[r]``: the visibility of
  the images the cell was pooled from. One clean and one occluded image give 1 (the
  cell is the clean image's), where the ``'mean'`` rule says 0.5.

With all-ones visibility both rules pool the same bits. Weights are quantised like
the values (exact sums), so the visibility rule is order- and split-independent too.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from oaml_mm.errors import ConfigError

__all__ = ['pool_templates', 'TemplateAccumulator', 'FRAC_BITS',
           'EMB_FRAC_BITS', 'MAX_EXACT_WEIGHT', 'POOLINGS', 'VIS_FLOOR',
           'POOL_SUFFIX', 'check_pooling']


def pool_templates(features: np.ndarray,
                   template_ids: Sequence[int],
                   media_ids: Sequence[int],
                   norms: Optional[np.ndarray] = None
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """Template embeddings: mean within media, sum over media, L2-normalise.

    Args:
        features (np.ndarray): ``[N, D]`` per-image features. If ``norms`` is None
            they are taken as the norm-keeping features (``embedding * norm``).
        template_ids (Sequence[int]): ``[N]`` template of each image.
        media_ids (Sequence[int]): ``[N]`` media of each image.
        norms (np.ndarray, optional): ``[N]`` or ``[N, 1]`` norms to multiply unit
            ``features`` with first.

    Returns:
        tuple: ``templates`` (sorted unique ids ``[T]``) and ``pooled`` ``[T, D]``
        unit vectors (float32).

    Examples:
        >>> f = np.array([[1., 0], [3, 0], [0, 1]])
        >>> t, p = pool_templates(f, [7, 7, 7], [1, 1, 2])
        >>> (p * 1e4).round().tolist()   # (mean(1, 3), 0) + (0, 1) = (2, 1)
        [[8944.0, 4472.0]]
    """
    feats = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    if norms is not None:
        feats = feats * torch.as_tensor(np.asarray(norms),
                                        dtype=torch.float64).reshape(-1, 1)
    tids = np.asarray(template_ids).reshape(-1)
    mids = np.asarray(media_ids).reshape(-1)
    if not (len(tids) == len(mids) == feats.shape[0]):
        raise ValueError(f'{feats.shape[0]} features, {len(tids)} template ids '
                         f'and {len(mids)} media ids')
    templates, t_idx = np.unique(tids, return_inverse=True)
    _, tm_idx, tm_count = np.unique(
        np.stack([tids, mids], 1), axis=0, return_inverse=True,
        return_counts=True)
    weights = torch.as_tensor(1.0 / tm_count[tm_idx.reshape(-1)])
    pooled = torch.zeros(len(templates), feats.shape[1], dtype=torch.float64)
    pooled.index_add_(0, torch.as_tensor(t_idx.reshape(-1)),
                      feats * weights[:, None])
    pooled = F.normalize(pooled, dim=1)
    return templates, pooled.float().numpy()


#: Fractional bits of the exact accumulator's fixed-point sums (weights,
#: visibility and maps: 2^-40 ~ 9e-13, range +-2^23; embeddings: 2^-32, range
#: +-2^31 for norm-keeping features).
FRAC_BITS = 40
EMB_FRAC_BITS = 32
#: Largest template weight (sum of media weights, i.e. media per template) the
#: exact map sums hold without overflow: |x| <= 1 per value, so |sum| <= weight.
MAX_EXACT_WEIGHT = float(2**(63 - FRAC_BITS - 1))


#: Template pooling rules: ``'mean'`` (embeddings by media weight; maps per cell by
#: media weight x visibility) and ``'visibility'`` (also embeddings by mean
#: visibility; floored map weights; visibility-weighted template visibility).
POOLINGS = ('mean', 'visibility')
#: Key suffix of each rule's branches in the metrics (``ijbc/adaface_vispool/...``).
POOL_SUFFIX = {'mean': '', 'visibility': '_vispool'}
#: Smallest visibility weight under ``pooling='visibility'``: a template whose
#: images are all occluded at a cell (or whose images are all fully occluded) falls
#: back to the plain mean there; an occluded image beside a clean one keeps
#: 1e-4 of the clean one's weight.
VIS_FLOOR = 1e-4


def check_pooling(pooling: Union[str, Sequence[str]],
                  owner: str = 'pooling') -> Tuple[str, ...]:
    """Validate a pooling option: one rule of :data:`POOLINGS` or several.

    Args:
        pooling (str | Sequence[str]): ``'mean'``, ``'visibility'`` or a tuple of
            them (each reported under its :data:`POOL_SUFFIX`).
        owner (str): Names the option in the error.

    Returns:
        tuple: The rules, in the given order.

    Raises:
        ConfigError: An unknown rule, an empty tuple or a rule listed twice.
    """
    modes = (pooling, ) if isinstance(pooling, str) else tuple(pooling)
    bad = [m for m in modes if m not in POOLINGS]
    if bad or not modes or len(set(modes)) != len(modes):
        raise ConfigError(
            f'{owner}={pooling!r}: expected one of {POOLINGS} or a tuple of '
            'distinct ones')
    return modes


def _fixed(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Round ``x`` to the int64 fixed-point grid ``2**-bits`` (per value, so the
    result does not depend on what else is summed)."""
    return torch.round(x.double() * float(2**bits)).to(torch.int64)


class TemplateAccumulator:
    """Streaming per-template pooling of embeddings, feature maps and visibility.

    Rows are template indices ``0..num_templates-1`` (the caller maps template ids to
    rows). Several accumulators (one per process) combine with :meth:`merge_` or by
    summing :meth:`sum_tensors` across processes.

    Two storages:

    * ``exact=True`` (the metrics): every image's contribution is rounded to a
      fixed-point grid and summed as int64, so sums are exact and do not depend on
      the order images arrive in nor on how they are split over processes: a
      1-process and an N-process evaluation pool bit-identical templates. Memory:
      8 bytes per map value (IJB-C, 23,124 x 512 x 7 x 7: 4.6 GB per process).
    * ``exact=False`` (galleries): the map is a running weighted mean in
      ``map_dtype`` (fp16: 1.16 GB for IJB-C); merges are exact up to that
      rounding.

    Args:
        num_templates (int): Number of rows.
        emb_dim (int, optional): Embedding size; None to skip embeddings.
        map_shape (tuple, optional): ``(C, h, w)`` of the feature maps; None to skip.
        map_dtype (torch.dtype): Storage of the running map mean (``exact=False``)
            and dtype of :meth:`maps`. Defaults to fp16.
        exact (bool): Fixed-point sums (see above). Defaults to False.
        pooling (str): ``'mean'`` or ``'visibility'`` (module docstring).
            Defaults to 'mean'.

    Raises:
        ConfigError: An unknown ``pooling``.
        ConfigError: (``exact=True``, from :meth:`add`) maps with values beyond
            [-1, 1] (not channel-normalised) or a template weight beyond
            ``MAX_EXACT_WEIGHT``.

    Examples:
        >>> acc = TemplateAccumulator(2, emb_dim=2)
        >>> acc.add(torch.tensor([0, 0, 1]), torch.tensor([[1., 0], [3, 0], [0, 1]]),
        ...         weights=torch.tensor([0.5, 0.5, 1.]))
        >>> acc.embeddings().tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """

    def __init__(self,
                 num_templates: int,
                 emb_dim: Optional[int] = None,
                 map_shape: Optional[Tuple[int, int, int]] = None,
                 map_dtype: torch.dtype = torch.float16,
                 exact: bool = False,
                 pooling: str = 'mean') -> None:
        check_pooling(pooling, 'TemplateAccumulator pooling')
        if not isinstance(pooling, str):
            raise ConfigError(f'TemplateAccumulator pools by one rule, got '
                              f'{pooling!r}')
        self.pooling = pooling
        self.num_templates = int(num_templates)
        self.emb_dim = emb_dim
        self.map_shape = tuple(map_shape) if map_shape is not None else None
        self.map_dtype = map_dtype
        self.exact = bool(exact)
        n = self.num_templates
        real = torch.float32
        self.weight = torch.zeros(
            n, dtype=torch.int64 if exact else torch.float64)
        self.count = torch.zeros(n, dtype=torch.int64)
        # Images whose feature / map or visibility held NaN or Inf, per row: they
        # are pooled as zeros (the sums stay finite and exact) and reported.
        self.bad_emb = torch.zeros(n, dtype=torch.int64)
        self.bad_map = torch.zeros(n, dtype=torch.int64)
        self.emb_sum = (torch.zeros(n, emb_dim,
                                    dtype=torch.int64 if exact else real)
                        if emb_dim else None)
        self.map_mean = self.map_sum = self.vis_sum = self.vis_num = None
        if self.map_shape is not None:
            c, h, w = self.map_shape
            if exact:
                self.map_sum = torch.zeros(n, c, h * w, dtype=torch.int64)
                self.vis_sum = torch.zeros(n, h * w, dtype=torch.int64)
            else:
                self.map_mean = torch.zeros(n, c, h * w, dtype=map_dtype)
                self.vis_sum = torch.zeros(n, h * w, dtype=real)
            if self.vis_weighted:
                # sum_i a_i[r] v_i[r]: numerator of the template visibility.
                self.vis_num = torch.zeros_like(self.vis_sum)

    _FIELDS = ('weight', 'count', 'bad_emb', 'bad_map', 'emb_sum', 'map_mean',
               'map_sum', 'vis_sum', 'vis_num')

    @property
    def vis_weighted(self) -> bool:
        """Whether ``pooling='visibility'``."""
        return self.pooling == 'visibility'

    @property
    def has_maps(self) -> bool:
        """Whether feature maps are pooled."""
        return self.vis_sum is not None

    def grow(self, num_templates: int) -> None:
        """Make room for at least ``num_templates`` rows (new rows are empty)."""
        extra = int(num_templates) - self.num_templates
        if extra <= 0:
            return
        for name in self._FIELDS:
            t = getattr(self, name)
            if t is not None:
                pad = t.new_zeros((extra, ) + tuple(t.shape[1:]))
                setattr(self, name, torch.cat([t, pad]))
        self.num_templates = int(num_templates)

    def sum_tensors(self) -> List[torch.Tensor]:
        """The integer tensors whose element-wise sum over processes merges them
        (``exact=True`` only; every rank must hold the same rows and parts).

        Raises:
            ConfigError: For ``exact=False`` (its map mean does not add).
        """
        if not self.exact:
            raise ConfigError('only an exact TemplateAccumulator merges by sums')
        return [t for t in (self.count, self.weight, self.bad_emb, self.bad_map,
                            self.emb_sum, self.vis_sum, self.map_sum,
                            self.vis_num)
                if t is not None]

    def nonfinite_rows(self) -> Dict[str, int]:
        """Rows that received an image with a non-finite value.

        Returns:
            dict: ``{'embedding': rows, 'feature_map': rows}`` (feature or norm /
            map or visibility), only the non-zero counts.
        """
        out = {}
        for key, bad in (('embedding', self.bad_emb), ('feature_map',
                                                       self.bad_map)):
            n = int((bad > 0).sum())
            if n:
                out[key] = n
        return out

    def add(self,
            rows: torch.Tensor,
            features: Optional[torch.Tensor] = None,
            maps: Optional[torch.Tensor] = None,
            visibility: Optional[torch.Tensor] = None,
            weights: Optional[torch.Tensor] = None) -> None:
        """Add a batch of images.

        Args:
            rows (torch.Tensor): ``[B]`` template row of each image.
            features (torch.Tensor, optional): ``[B, D]`` norm-keeping features.
            maps (torch.Tensor, optional): ``[B, C, h, w]`` channel-normalised maps.
            visibility (torch.Tensor, optional): ``[B, 1, h, w]`` (or ``[B, h, w]``)
                in [0, 1]; all ones when None. Under ``pooling='visibility'`` it
                also weights the embeddings (by its mean), maps or not. Pass the
                map the matcher reads (``IJBMetric`` and ``FaceGallery`` pass the
                prediction calibrated by the model's ``vis_range``): the pooled
                visibility is then that map, matched as it is.
            weights (torch.Tensor, optional): ``[B]`` media weights
                (``1 / images in the media``); ones when None.
        """
        rows = torch.as_tensor(rows, dtype=torch.int64).reshape(-1).cpu()
        b = rows.numel()
        w = (torch.ones(b, dtype=torch.float64) if weights is None else
             torch.as_tensor(weights).reshape(-1).double().cpu())
        self.weight.index_add_(0, rows, _fixed(w, FRAC_BITS) if self.exact
                               else w)
        self.count.index_add_(0, rows, torch.ones(b, dtype=torch.int64))
        v = (None if visibility is None else
             visibility.detach().float().cpu().reshape(b, -1))
        if self.emb_sum is not None and features is not None:
            self._add_features(rows, features, v, w)
        if not self.has_maps or maps is None:
            return
        x = maps.detach().float().cpu().reshape(b, maps.shape[1], -1)
        hw = x.shape[-1]
        if v is None:
            v = torch.ones(b, hw)
        bad = ~(torch.isfinite(x).flatten(1).all(1) & torch.isfinite(v).all(1))
        if bool(bad.any()):
            self.bad_map.index_add_(0, rows, bad.long())
            x = torch.where(bad[:, None, None], torch.zeros_like(x), x)
            v = torch.where(bad[:, None], torch.zeros_like(v), v)
        if self.vis_weighted:
            # The floor keeps a cell every image hides a plain mean; a bad image
            # still weighs nothing.
            a = v.clamp_min(VIS_FLOOR) * w[:, None].float()
            a = torch.where(bad[:, None], torch.zeros_like(a), a)
        else:
            a = v * w[:, None].float()  # [B, hw] weight of each image cell
        if self.exact:
            if x.numel() and float(x.abs().max()) > 1.0 + 1e-3:
                raise ConfigError(
                    'TemplateAccumulator(exact=True) pools channel-normalised '
                    f'maps (values in [-1, 1]); got |x| up to '
                    f'{float(x.abs().max()):.3g}')
            self.vis_sum.index_add_(0, rows, _fixed(a, FRAC_BITS))
            if self.vis_num is not None:
                self.vis_num.index_add_(0, rows, _fixed(a * v, FRAC_BITS))
            self.map_sum.index_add_(0, rows,
                                    _fixed(x * a[:, None, :], FRAC_BITS))
            top = float(self.weight[rows].max()) / 2**FRAC_BITS
            if top > MAX_EXACT_WEIGHT:
                raise ConfigError(
                    f'a template gathered weight {top:.0f} (media), beyond the '
                    f'{MAX_EXACT_WEIGHT:.0f} exact pooling holds')
            return
        uniq, inv = torch.unique(rows, return_inverse=True)
        a_new = torch.zeros(len(uniq), hw).index_add_(0, inv, a)
        s_new = torch.zeros(len(uniq), x.shape[1], hw).index_add_(
            0, inv, x * a[:, None, :])
        a_old = self.vis_sum[uniq]
        m_old = self.map_mean[uniq].float()
        total = a_old + a_new
        # Running weighted mean in fp32, stored in fp16: sums of many unit-scale
        # maps would lose their small increments if they were kept in fp16.
        mean = (m_old * a_old[:, None, :] + s_new) / \
            total.clamp_min(1e-12)[:, None, :]
        self.map_mean[uniq] = mean.to(self.map_dtype)
        self.vis_sum[uniq] = total
        if self.vis_num is not None:
            # Summed like vis_sum, so that all-ones visibility gives 1 exactly.
            self.vis_num[uniq] = self.vis_num[uniq] + torch.zeros(
                len(uniq), hw).index_add_(0, inv, a * v)

    def _add_features(self, rows: torch.Tensor, features: torch.Tensor,
                      v: Optional[torch.Tensor], w: torch.Tensor) -> None:
        """Add ``[B, D]`` norm-keeping features with media weights ``w``, times
        the mean visibility under ``pooling='visibility'``."""
        b = rows.numel()
        f = features.detach().float().cpu().reshape(b, -1)
        bad = ~torch.isfinite(f).all(1)
        if self.vis_weighted and v is not None:
            # The weight depends on the visibility: a non-finite one spoils the
            # embedding too.
            bad = bad | ~torch.isfinite(v).all(1)
            vq = _fixed(torch.where(bad[:, None], torch.zeros_like(v), v),
                        FRAC_BITS)
            # Mean from the fixed-point values: exact, so an image's weight
            # does not depend on the batch it came in (1.0 exactly for ones).
            vbar = vq.sum(1).double() / float(v.shape[1] * 2**FRAC_BITS)
            w = w * vbar.clamp_min(VIS_FLOOR)
        if bool(bad.any()):
            self.bad_emb.index_add_(0, rows, bad.long())
            f = torch.where(bad[:, None], torch.zeros_like(f), f)
        f = f * w[:, None].float()
        self.emb_sum.index_add_(0, rows, _fixed(f, EMB_FRAC_BITS)
                                if self.exact else f)

    def feature_sums(self) -> torch.Tensor:
        """``[T, D]`` float64 weighted feature sums (before normalisation)."""
        if self.exact:
            return self.emb_sum.double() / 2**EMB_FRAC_BITS
        return self.emb_sum.double()

    def embeddings(self) -> torch.Tensor:
        """``[T, D]`` pooled unit embeddings (rows without images are zero)."""
        return F.normalize(self.feature_sums(), dim=1).float()

    def maps(self, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[T, C, h, w]`` pooled maps, L2-normalised over channels, ``map_dtype``.

        Args:
            rows (torch.Tensor, optional): Only these rows.
        """
        if self.exact:
            m = self.map_sum if rows is None else self.map_sum[rows]
            # The common 2^-FRAC_BITS scale cancels in the normalisation.
            m = F.normalize(m.double(), dim=1)
        else:
            m = self.map_mean if rows is None else self.map_mean[rows]
            m = F.normalize(m.float(), dim=1)
        c, h, w = self.map_shape
        return m.to(self.map_dtype).reshape(m.shape[0], c, h, w)

    def visibility(self, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[T, 1, h, w]`` pooled visibility: the media-weighted mean over the
        images (``'mean'``) or their visibility-weighted mean
        (``'visibility'``)."""
        if self.vis_weighted:
            vs = self.vis_num if rows is None else self.vis_num[rows]
            wt = self.vis_sum if rows is None else self.vis_sum[rows]
            _, h, w = self.map_shape
            v = vs.double() / wt.double().clamp_min(1e-12)
            return v.float().reshape(-1, 1, h, w)
        vs = self.vis_sum if rows is None else self.vis_sum[rows]
        wt = self.weight if rows is None else self.weight[rows]
        _, h, w = self.map_shape
        # In exact mode both carry the same 2^-FRAC_BITS scale.
        v = vs.double() / wt.double().clamp_min(1e-12)[:, None]
        return v.float().reshape(-1, 1, h, w)

    def merge_(self, other: 'TemplateAccumulator') -> None:
        """Fold another accumulator of the same storage into this one.

        ``other`` may lack the embedding or map part (a process that saw no image);
        its missing parts count as empty.

        Raises:
            ConfigError: If one is exact and the other not, or they pool by
                different rules.
        """
        if self.exact != other.exact:
            raise ConfigError('cannot merge an exact and a running-mean '
                              'TemplateAccumulator')
        if self.pooling != other.pooling:
            raise ConfigError(f'cannot merge TemplateAccumulators pooling by '
                              f'{self.pooling!r} and {other.pooling!r}')
        self.grow(other.num_templates)
        other.grow(self.num_templates)
        if self.exact:
            for name in ('emb_sum', 'vis_sum', 'map_sum', 'vis_num'):
                mine, theirs = getattr(self, name), getattr(other, name)
                if mine is not None and theirs is not None:
                    mine += theirs
        elif self.map_mean is not None and other.map_mean is not None:
            num = self.map_mean.float() * self.vis_sum[:, None, :] + \
                other.map_mean.float() * other.vis_sum[:, None, :]
            total = self.vis_sum + other.vis_sum
            self.map_mean = (num / total.clamp_min(1e-12)[:, None, :]).to(
                self.map_dtype)
            self.vis_sum = total
            if self.vis_num is not None and other.vis_num is not None:
                self.vis_num += other.vis_num
        if not self.exact and self.emb_sum is not None and \
                other.emb_sum is not None:
            self.emb_sum += other.emb_sum
        self.weight += other.weight
        self.count += other.count
        self.bad_emb += other.bad_emb
        self.bad_map += other.bad_map
