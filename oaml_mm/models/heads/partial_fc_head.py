"""Partial FC: a margin head whose class centres are sharded over the DDP ranks.

An et al., "Partial FC: Training 10 Million Identities on a Single Machine", ICCVW
2021, https://arxiv.org/abs/2010.05222 (PFC v2 as in insightface's ``arcface_torch``:
the shard is one parameter, the sampled columns are selected from it every step).

With a replicated margin head every rank holds all ``C`` centres ``[D, C]``, their
gradient and optimizer moments, and computes ``[B, C]`` logits. Here rank ``r`` of
``W`` holds only its contiguous slice of about ``C / W`` centres. Each step:

1. the embeddings (with autograd), AdaFace's norms and the labels of every rank are
   all-gathered into the global batch ``[N, D]``;
2. every centre that is a positive of the global batch is kept, plus a uniform sample
   of the shard's other centres up to ``sample_rate`` of the shard (no duplicates;
   the draw depends only on ``seed``, the head's step counter and the rank, so a
   resumed run draws the same columns);
3. the margin logits ``[N, S_r]`` come from the margin head's own margin function
   (:func:`~oaml_mm.models.functional.margin_logits`; a row whose target lies on
   another shard is only scaled) with AdaFace's norm statistics taken over the
   global batch, exactly as the replicated head computes them on that batch;
4. softmax cross-entropy and top-1 accuracy across shards from an all-reduced
   maximum, sum of exponentials and target logit.

Gradients: the shard gets the gradient of the global-batch mean loss (it is left
out of DDP's gradient averaging, see :meth:`PartialFCHead.sharded_parameters`); the
gradients of the global batch's embeddings are summed over the ranks and each rank
keeps its own rows, scaled by ``W`` — what a rank's embeddings receive from a
replicated head under DDP (whose loss is the rank's local mean) — so that once DDP
averages the backbone's gradients the step is the replicated head's on the global
batch. With one process (or no process group) and ``sample_rate=1`` the head is the
wrapped margin head, operation for operation.

Checkpoints hold the whole head under the replicated head's keys (``kernel`` as
``[in_channels, num_classes]``, AdaFace's ``batch_mean``/``batch_std``) plus
``step``: the shards are gathered when a checkpoint is written (by the runner, see
``docs/partial_fc.md``) and each rank takes its columns when one is loaded, so a
checkpoint loads at any world size and into the replicated head, and vice versa.
"""
import copy
import math
from typing import Dict, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.model import BaseModule

from oaml_mm.errors import ConfigError
from oaml_mm.registry import MODELS
from oaml_mm.utils.dist import dist_info, gather_shards, shard_range
from ..functional.margin import cosine_logits, margin_logits
from .margin_heads import BaseMarginHead

__all__ = ['PartialFCHead', 'without_sharded_head']

#: Columns drawn per generator when the centres are initialised: a chunk's draw
#: does not depend on the world size, so neither does the initial head.
_INIT_CHUNK = 16384


class _GatherRows(torch.autograd.Function):
    """All-gather rows of every rank (sizes may differ); backward sums the gradient
    over the ranks and returns this rank's rows times ``grad_scale``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, grad_scale: float) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        n = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
        sizes = [torch.zeros_like(n) for _ in range(world)]
        dist.all_gather(sizes, n)
        sizes = [int(s) for s in sizes]
        padded = x.new_zeros((max(sizes), ) + tuple(x.shape[1:]))
        padded[:x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        ctx.sizes, ctx.rank, ctx.grad_scale = sizes, rank, grad_scale
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = sum(ctx.sizes[:ctx.rank])
        own = grad[start:start + ctx.sizes[ctx.rank]]
        return own * ctx.grad_scale, None


class _ShardedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy over logits split by columns across the ranks.

    ``loss = mean_i(log sum_j exp(z_ij - m_i) + m_i - z_i,y_i)`` with the maximum
    ``m``, the sum of exponentials and the target logit all-reduced; the backward is
    local: ``(softmax - onehot) / N`` on this rank's columns.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        n = logits.shape[0]
        rows = torch.arange(n, device=logits.device)
        valid = labels >= 0
        if logits.shape[1]:
            top = logits.max(dim=1).values
        else:
            top = logits.new_full((n, ), -float('inf'))
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
        prob = (logits - top[:, None]).exp_()
        total = prob.sum(dim=1)
        dist.all_reduce(total)
        prob.div_(total[:, None])
        target = torch.where(valid, logits[rows, labels.clamp(min=0)],
                             torch.zeros_like(top))
        dist.all_reduce(target)
        ctx.save_for_backward(prob, labels)
        return (total.log() + top - target).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        prob, labels = ctx.saved_tensors
        out = prob.clone()
        valid = labels >= 0
        rows = torch.arange(out.shape[0], device=out.device)[valid]
        out[rows, labels[valid]] -= 1.0
        return out * (grad / out.shape[0]), None


@MODELS.register_module()
class PartialFCHead(BaseModule):
    """Margin head with its class centres sharded over the ranks (Partial FC).

    `Partial FC <https://arxiv.org/abs/2010.05222>`_ (An et al., ICCVW 2021): each
    rank holds ``num_classes / world_size`` centres; the margin softmax over all
    centres is computed across the ranks. The margin is the wrapped head's
    (AdaFace, ArcFace or CosFace); see ``docs/partial_fc.md``.

    Examples::

        head = dict(type='PartialFCHead', in_channels=512, num_classes=2059906,
                    sample_rate=0.1, margin_head=dict(type='AdaFaceHead'))
        head = dict(type='PartialFCHead', in_channels=128, num_classes=400,
                    margin_head=dict(type='ArcFaceHead', m=0.5, s=64.0))

    Args:
        in_channels (int): Embedding size D. Defaults to 512.
        num_classes (int): Number of identities C (>= the world size).
            Defaults to 10572.
        sample_rate (float): Fraction of its shard's centres a rank scores each
            step, in (0, 1]; all positives of the global batch are always
            scored. 1.0 scores every centre. Defaults to 1.0.
        margin_head (dict): Config of a :class:`BaseMarginHead` (its margin,
            scale and loss; ``in_channels``/``num_classes`` are set here). Its
            loss must be a plain ``CrossEntropyLoss``. Defaults to AdaFaceHead.
        seed (int): Seed of the initial centres and of the negative sampling.
            Defaults to 0.
        init_cfg (dict, optional): mmengine initialisation config.

    Raises:
        ConfigError: A size or ``sample_rate`` out of range, fewer classes than
            ranks, a ``margin_head`` that is not a margin head or whose loss is
            not a plain cross-entropy.
    """

    def __init__(self,
                 in_channels: int = 512,
                 num_classes: int = 10572,
                 sample_rate: float = 1.0,
                 margin_head: dict = dict(type='AdaFaceHead'),
                 seed: int = 0,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        rank, world = dist_info()
        if in_channels <= 0 or num_classes < world:
            raise ConfigError(
                f'PartialFCHead: in_channels must be positive and num_classes '
                f'at least the world size {world}, got {in_channels}, '
                f'{num_classes}')
        if not 0.0 < sample_rate <= 1.0:
            raise ConfigError('PartialFCHead: sample_rate must lie in (0, 1], '
                              f'got {sample_rate}')
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.sample_rate = float(sample_rate)
        self.seed = int(seed)
        self.rank, self.world_size = rank, world
        self.start, self.end = shard_range(num_classes, world, rank)
        kind = margin_head.get('type')
        cls = MODELS.get(kind) if isinstance(kind, str) else kind
        if not (isinstance(cls, type) and issubclass(cls, BaseMarginHead)):
            raise ConfigError(
                'PartialFCHead: margin_head must be AdaFaceHead, ArcFaceHead, '
                f'CosFaceHead or another BaseMarginHead, got {kind!r}')
        # One class: the wrapped head only lends its margins and its loss.
        inner = MODELS.build(
            dict(margin_head, in_channels=in_channels, num_classes=1))
        loss = inner.loss_module
        if type(loss).__name__ != 'CrossEntropyLoss' or getattr(
                loss, 'use_sigmoid', False) or getattr(
                    loss, 'use_soft', False) or getattr(
                        loss, 'class_weight', None) is not None:
            raise ConfigError(
                'PartialFCHead: margin_head.loss must be a plain '
                f'CrossEntropyLoss (no sigmoid, soft or class weights), got '
                f'{type(loss).__name__}')
        del inner.kernel
        self.margin_head = inner
        self.kernel = nn.Parameter(
            torch.empty(in_channels, self.end - self.start))
        self.register_buffer('step', torch.zeros((), dtype=torch.long))
        self.reset_kernel()
        self._gathered: Optional[torch.Tensor] = None
        self._register_state_dict_hook(PartialFCHead._flatten_state)
        self._register_load_state_dict_pre_hook(
            PartialFCHead._shard_loaded_state, with_module=True)

    # ------------------------------------------------------------ weights
    def reset_kernel(self) -> None:
        """Draw this shard's centres uniformly on the unit sphere.

        Class ``c`` gets the same centre at every world size (chunks of
        ``16384`` classes, each from its own generator seeded by ``seed``).
        """
        with torch.no_grad():
            first = self.start // _INIT_CHUNK
            for chunk in range(first, -(-self.end // _INIT_CHUNK)):
                gen = torch.Generator().manual_seed(self.seed * 1000003 + chunk)
                lo = chunk * _INIT_CHUNK
                cols = torch.randn(self.in_channels, _INIT_CHUNK, generator=gen)
                a, b = max(lo, self.start), min(lo + _INIT_CHUNK, self.end)
                block = cols[:, a - lo:b - lo]
                self.kernel[:, a - self.start:b - self.start] = block / \
                    block.norm(dim=0, keepdim=True)

    def init_weights(self) -> None:
        if self.init_cfg:
            super().init_weights()

    def sharded_parameters(self) -> Dict[str, Tuple[int, int]]:
        """Parameters split over the ranks: name -> (dimension, whole size).

        Each rank holds :func:`~oaml_mm.utils.shard_range` of the whole size.
        The runner leaves these out of DDP (no broadcast, no gradient
        averaging) and gathers them, with their optimizer state, into one
        checkpoint.
        """
        return {'kernel': (1, self.num_classes)}

    def gather_for_checkpoint(self, dst: int = 0) -> None:
        """Collective: gather the whole kernel to rank ``dst`` for ``state_dict``.

        Every rank must call it; rank ``dst``'s next ``state_dict()`` then
        needs no collective (the runner saves on rank 0 only). Undone by
        :meth:`release_gathered`.
        """
        self._gathered = gather_shards(self.kernel.detach(), self.num_classes,
                                       dim=1, dst=dst)

    def release_gathered(self) -> None:
        """Drop what :meth:`gather_for_checkpoint` kept."""
        self._gathered = None

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.world_size > 1:
            full = self._gathered
            if full is None:  # every rank calls state_dict(): gather here
                full = gather_shards(self.kernel.detach(), self.num_classes,
                                     dim=1, dst=None)
            destination[prefix + 'kernel'] = full

    @staticmethod
    def _flatten_state(module, state_dict, prefix, local_metadata) -> None:
        """state_dict hook: the margin head's buffers under the head's keys."""
        inner = prefix + 'margin_head.'
        for key in [k for k in state_dict if k.startswith(inner)]:
            state_dict[prefix + key[len(inner):]] = state_dict.pop(key)

    def _shard_loaded_state(self, state_dict, prefix, *args) -> None:
        """Load pre-hook: the replicated layout in, this rank's columns out."""
        for name in self.margin_head.state_dict():
            if prefix + name in state_dict:
                state_dict[prefix + 'margin_head.' + name] = state_dict.pop(
                    prefix + name)
        key = prefix + 'kernel'
        full = state_dict.get(key)
        if isinstance(full, torch.Tensor) and full.dim() == 2 and tuple(
                full.shape) == (self.in_channels, self.num_classes):
            state_dict[key] = full[:, self.start:self.end]

    # ------------------------------------------------------------- forward
    def _gather(self, embeddings: torch.Tensor, norms: torch.Tensor,
                labels: torch.Tensor):
        if dist_info()[1] != self.world_size:
            raise ConfigError(
                f'PartialFCHead: built for {self.world_size} process(es), run '
                f'in {dist_info()[1]}: build the model after the process '
                'group is initialised (the Runner does)')
        if self.world_size == 1:
            return embeddings, norms, labels
        emb = _GatherRows.apply(embeddings, float(self.world_size))
        with torch.no_grad():
            norms = _GatherRows.apply(norms.detach().reshape(-1, 1).float(),
                                      1.0)
            labels = _GatherRows.apply(labels, 1.0)
        return emb, norms, labels

    def sample(self, labels: torch.Tensor,
               step: Optional[int] = None
               ) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """Columns of this shard to score and the labels in their numbering.

        Args:
            labels (Tensor): Global-batch identities [N] (int64).
            step (int, optional): Draw of this step; defaults to the head's
                ``step`` counter.

        Returns:
            tuple: ``index`` (sorted shard-local columns [S], or None for the
            whole shard when ``sample_rate`` is 1) and ``local`` labels [N]:
            a label's position among the scored columns, -1 when its centre
            lies on another shard.
        """
        size = self.end - self.start
        mine = (labels >= self.start) & (labels < self.end)
        shifted = labels - self.start
        if self.sample_rate >= 1.0:
            return None, torch.where(mine, shifted, torch.full_like(labels, -1))
        positives = torch.unique(shifted[mine]).cpu()
        count = min(size, max(int(math.ceil(self.sample_rate * size)),
                              positives.numel()))
        step = int(self.step) if step is None else int(step)
        gen = torch.Generator().manual_seed(
            ((self.seed * 1000003 + step) * 4099 + self.rank) % (2**62))
        score = torch.rand(size, generator=gen)
        score[positives] = 2.0
        index = torch.topk(score, count, sorted=False).indices.sort().values
        index = index.to(labels.device)
        pos = torch.searchsorted(index, shifted.clamp(0, max(size - 1, 0)))
        return index, torch.where(mine, pos, torch.full_like(labels, -1))

    def forward(self, embeddings: torch.Tensor, norms: torch.Tensor,
                labels: torch.Tensor):
        """Margin logits of the global batch on this rank's scored centres.

        Args:
            embeddings (Tensor): This rank's embeddings [B, D].
            norms (Tensor): Their norms [B, 1] (AdaFace's quality indicator).
            labels (Tensor): Their identities [B].

        Returns:
            tuple: logits [N, S] (fp32, N the global batch, S the scored
            columns) and the labels [N] in the columns' numbering (-1: on
            another shard).
        """
        emb, norms, labels = self._gather(embeddings, norms,
                                          labels.view(-1).long())
        index, local = self.sample(labels)
        kernel = self.kernel if index is None else self.kernel.index_select(
            1, index)
        angular, additive = self.margin_head.margins(norms)
        logits = margin_logits(cosine_logits(emb, kernel), local, angular,
                               additive, self.margin_head.s,
                               self.margin_head.eps)
        return logits, local

    def loss(self, embeddings: torch.Tensor, norms: torch.Tensor,
             labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Margin softmax loss over all centres and top-1 accuracy.

        With ``sample_rate < 1`` both are over the scored centres only.

        Returns:
            dict: ``loss`` (scalar, the global batch's mean, with grad) and
            ``accuracy`` (scalar, no grad), equal on every rank.

        Raises:
            ConfigError: A label outside ``[0, num_classes)``.
        """
        labels = labels.view(-1).long()
        if labels.numel() and (labels.min() < 0
                               or labels.max() >= self.num_classes):
            raise ConfigError(
                f'PartialFCHead: labels must lie in [0, {self.num_classes}), '
                f'got [{int(labels.min())}, {int(labels.max())}]; '
                'num_classes does not fit the data set')
        logits, local = self(embeddings, norms, labels)
        if self.training:
            self.step += 1
        weight = float(getattr(self.margin_head.loss_module, 'loss_weight',
                               1.0))
        if self.world_size == 1:
            loss = self.margin_head.loss_module(logits, local)
            with torch.no_grad():
                acc = (logits.argmax(dim=1) == local).float().mean()
            return dict(loss=loss, accuracy=acc)
        loss = _ShardedCrossEntropy.apply(logits, local) * weight
        with torch.no_grad():
            rows = torch.arange(logits.shape[0], device=logits.device)
            top = logits.max(dim=1).values if logits.shape[1] else \
                logits.new_full((logits.shape[0], ), -float('inf'))
            dist.all_reduce(top, op=dist.ReduceOp.MAX)
            target = torch.where(local >= 0, logits[rows, local.clamp(min=0)],
                                 torch.full_like(top, -float('inf')))
            dist.all_reduce(target, op=dist.ReduceOp.MAX)
            acc = (target >= top).float().mean()
        return dict(loss=loss, accuracy=acc)


def without_sharded_head(model_cfg: dict) -> dict:
    """A recognizer config for inference: a ``PartialFCHead`` removed.

    The margin head serves only the training loss; built in one process a
    sharded head would hold every centre (4.2 GB at 2.06M identities). Configs
    with a replicated head are returned unchanged (their checkpoints keep the
    head, docs/inference.md).

    Args:
        model_cfg (dict): ``OAMLRecognizer`` config (``dict`` or ``ConfigDict``).

    Returns:
        dict: The same config, or a copy with ``head=None``.

    Examples:
        >>> cfg = dict(type='OAMLRecognizer', head=dict(type='PartialFCHead'))
        >>> without_sharded_head(cfg)['head'] is None
        True
    """
    head = model_cfg.get('head') if hasattr(model_cfg, 'get') else None
    kind = head.get('type') if hasattr(head, 'get') else None
    if kind not in ('PartialFCHead', PartialFCHead):
        return model_cfg
    out = copy.copy(model_cfg)
    out['head'] = None
    return out
