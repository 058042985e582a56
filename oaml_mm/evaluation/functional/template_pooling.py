"""IJB template pooling of embeddings and of visibility-weighted feature maps.

Embeddings follow the IJB-B/IJB-C 1:1 protocol of insightface's ``IJB_11.py`` (also
AdaFace's): each image feature keeps its norm (flip fusion happens in the model), the
features of one media (a still or the frames of one video) are averaged, the media
means of a template are summed and the sum is L2-normalised.

QAConv needs one feature map per template. OAML adds a visibility map per image, so a
template map is pooled per spatial cell, each image weighted by its media weight
(``1 / images in its media``, as above) times its visibility at that cell:

    M_t[:, r] = sum_i w_i v_i[r] x_i[:, r] / sum_i w_i v_i[r]     (then L2 over channels)
    V_t[r]    = sum_i w_i v_i[r] / sum_i w_i

An occluded cell therefore borrows its content from the images where it is visible, and
the template visibility says how much evidence each cell has. With all-ones visibility
and one image per template this is the image's own map and visibility.

:class:`TemplateAccumulator` computes both while images stream in, holding only one
row per template (never the image maps): the map is kept as a running weighted mean in
fp16, so IJB-C's 23,124 templates x 512 x 7 x 7 need 1.16 GB.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ['pool_templates', 'TemplateAccumulator']


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


class TemplateAccumulator:
    """Streaming per-template pooling of embeddings, feature maps and visibility.

    Rows are template indices ``0..num_templates-1`` (the caller maps template ids to
    rows). Several accumulators (one per process) combine exactly with
    :meth:`state` / :meth:`load_merged`-style sums: embedding sums and weights add,
    and the running map mean combines as ``sum_r A_r M_r / sum_r A_r``.

    Args:
        num_templates (int): Number of rows.
        emb_dim (int, optional): Embedding size; None to skip embeddings.
        map_shape (tuple, optional): ``(C, h, w)`` of the feature maps; None to skip.
        map_dtype (torch.dtype): Storage of the running map mean. Defaults to fp16.

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
                 map_dtype: torch.dtype = torch.float16) -> None:
        self.num_templates = int(num_templates)
        self.emb_dim = emb_dim
        self.map_shape = tuple(map_shape) if map_shape is not None else None
        self.map_dtype = map_dtype
        n = self.num_templates
        self.weight = torch.zeros(n, dtype=torch.float64)
        self.count = torch.zeros(n, dtype=torch.int64)
        self.emb_sum = (torch.zeros(n, emb_dim, dtype=torch.float32)
                        if emb_dim else None)
        if self.map_shape is not None:
            c, h, w = self.map_shape
            self.map_mean = torch.zeros(n, c, h * w, dtype=map_dtype)
            self.vis_sum = torch.zeros(n, h * w, dtype=torch.float32)
        else:
            self.map_mean = None
            self.vis_sum = None

    def grow(self, num_templates: int) -> None:
        """Make room for at least ``num_templates`` rows (new rows are empty)."""
        extra = int(num_templates) - self.num_templates
        if extra <= 0:
            return
        for name in ('weight', 'count', 'emb_sum', 'map_mean', 'vis_sum'):
            t = getattr(self, name)
            if t is not None:
                pad = t.new_zeros((extra, ) + tuple(t.shape[1:]))
                setattr(self, name, torch.cat([t, pad]))
        self.num_templates = int(num_templates)

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
                in [0, 1]; all ones when None.
            weights (torch.Tensor, optional): ``[B]`` media weights
                (``1 / images in the media``); ones when None.
        """
        rows = torch.as_tensor(rows, dtype=torch.int64).reshape(-1).cpu()
        b = rows.numel()
        w = (torch.ones(b, dtype=torch.float64) if weights is None else
             torch.as_tensor(weights).reshape(-1).double().cpu())
        self.weight.index_add_(0, rows, w)
        self.count.index_add_(0, rows, torch.ones(b, dtype=torch.int64))
        if self.emb_sum is not None and features is not None:
            self.emb_sum.index_add_(
                0, rows, features.detach().float().cpu() * w[:, None].float())
        if self.map_mean is not None and maps is not None:
            x = maps.detach().float().cpu().reshape(b, maps.shape[1], -1)
            hw = x.shape[-1]
            if visibility is None:
                v = torch.ones(b, hw)
            else:
                v = visibility.detach().float().cpu().reshape(b, hw)
            a = v * w[:, None].float()  # [B, hw] weight of each image cell
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

    def embeddings(self) -> torch.Tensor:
        """``[T, D]`` pooled unit embeddings (rows without images are zero)."""
        return F.normalize(self.emb_sum, dim=1)

    def maps(self, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[T, C, h, w]`` pooled maps, L2-normalised over channels, storage dtype.

        Args:
            rows (torch.Tensor, optional): Only these rows.
        """
        m = self.map_mean if rows is None else self.map_mean[rows]
        c, h, w = self.map_shape
        m = F.normalize(m.float(), dim=1).to(self.map_dtype)
        return m.reshape(m.shape[0], c, h, w)

    def visibility(self, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[T, 1, h, w]`` pooled visibility (weighted mean over the images)."""
        vs = self.vis_sum if rows is None else self.vis_sum[rows]
        wt = self.weight if rows is None else self.weight[rows]
        _, h, w = self.map_shape
        v = vs / wt.float().clamp_min(1e-12)[:, None]
        return v.reshape(-1, 1, h, w)

    def merge_(self, other: 'TemplateAccumulator') -> None:
        """Fold another accumulator into this one (exactly).

        ``other`` may lack the embedding or map part (a process that saw no image);
        its missing parts count as empty.
        """
        self.grow(other.num_templates)
        other.grow(self.num_templates)
        if self.map_mean is not None and other.map_mean is not None:
            num = self.map_mean.float() * self.vis_sum[:, None, :] + \
                other.map_mean.float() * other.vis_sum[:, None, :]
            total = self.vis_sum + other.vis_sum
            self.map_mean = (num / total.clamp_min(1e-12)[:, None, :]).to(
                self.map_dtype)
            self.vis_sum = total
        if self.emb_sum is not None and other.emb_sum is not None:
            self.emb_sum += other.emb_sum
        self.weight += other.weight
        self.count += other.count
