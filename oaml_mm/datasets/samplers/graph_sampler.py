"""Graph sampling: every batch is a class and its nearest classes under the matcher.

QAConv-GS (Liao & Shao, "Graph Sampling Based Deep Metric Learning for Generalizable
Person Re-Identification", CVPR 2022, https://arxiv.org/abs/2104.01546): at the start
of every epoch one image per class is drawn, all class pairs are scored with the
current QAConv matcher, and each class's ``P - 1`` nearest classes are kept. Every
class is then the anchor of one batch holding itself and those neighbours, ``K``
images each, so each batch holds the hardest negatives the model currently knows
of. The anchors' batches are shuffled, as in the public QAConv-GS code.

The scoring needs the model, which a sampler does not own:
:class:`~oaml_mm.engine.hooks.GraphSamplerHook` hands the sampler a *graph builder*
(representative dataset indices -> neighbour table) before training, and the sampler
calls it when its iterator for a new epoch is created. That happens in the main
process, for epoch-based loops and for mmengine's infinite iterator of iteration-based
loops alike.

Determinism and resume: the representatives, the anchors' order and the images of
every batch are drawn from ``(seed, epoch)``; the graph is a function of the model
weights at the epoch start. The hook stores the current epoch's neighbour table in
the checkpoint, so a run resumed in the middle of an epoch draws exactly the batches
of the uninterrupted run. Epochs before that one, which an iteration-based loop
replays only to skip their batches, get a graph without scoring.

Cost: the scoring is ``N^2`` QAConv pairs for ``N`` classes, each ``hw * hw * C``
multiply-adds; ``docs/datasets.md`` ("Graph sampling") gives measured figures.
"""
import math
import warnings
from typing import Callable, Dict, Iterator, Optional, Sized

import numpy as np
import torch
from mmengine.dist import all_gather, get_dist_info, sync_random_seed
from torch.utils.data import Sampler

from oaml_mm.errors import ConfigError
from oaml_mm.registry import DATA_SAMPLERS
from .pk_sampler import dataset_labels, group_labels, pk_layout
from .stream_sampler import mix_seeds

__all__ = ['GraphSampler', 'nearest_classes']

#: ``(representative dataset indices [N]) -> neighbour table [N, >= P - 1]``.
GraphBuilder = Callable[[np.ndarray], np.ndarray]


def nearest_classes(score_fn: Callable[[slice], torch.Tensor],
                    num_classes: int,
                    k: int,
                    block_size: int = 256,
                    rank: Optional[int] = None,
                    world_size: Optional[int] = None) -> np.ndarray:
    """Each class's ``k`` highest-scoring other classes, one block of rows at a time.

    Only ``block_size x num_classes`` scores exist at once (the full matrix of 100k
    classes would be 40 GB). Under DDP every rank scores its own contiguous share of
    rows and the shares are all-gathered, so every rank returns the same table.

    Args:
        score_fn (Callable): ``score_fn(rows)`` -> scores ``[len(rows), num_classes]``
            of the classes ``rows`` (a ``slice``) against all classes, higher = more
            similar (e.g. ``QAConvHead.match``).
        num_classes (int): N.
        k (int): Neighbours per class, ``1 <= k < N``.
        block_size (int): Rows scored at once. Defaults to 256.
        rank (int, optional): DDP rank override.
        world_size (int, optional): DDP world size override.

    Returns:
        np.ndarray: int64 ``[N, k]``, most similar first; a class is never its own
        neighbour.

    Raises:
        ConfigError: ``k`` out of range or a score block of the wrong shape.

    Examples:
        >>> x = torch.tensor([0., 1., 10., 11.])
        >>> fn = lambda rows: -(x[rows, None] - x[None]).abs()
        >>> nearest_classes(fn, 4, 1).ravel().tolist()
        [1, 0, 3, 2]
    """
    if not 1 <= k < num_classes:
        raise ConfigError(f'nearest_classes: k={k} must be in [1, {num_classes})')
    dist_rank, dist_world = get_dist_info()
    rank = dist_rank if rank is None else rank
    world_size = dist_world if world_size is None else world_size
    share = math.ceil(num_classes / world_size)
    lo, hi = min(num_classes, rank * share), min(num_classes, (rank + 1) * share)
    out = torch.full((share, k), -1, dtype=torch.int64)
    for r0 in range(lo, hi, block_size):
        r1 = min(hi, r0 + block_size)
        scores = score_fn(slice(r0, r1)).detach().float().cpu()
        if tuple(scores.shape) != (r1 - r0, num_classes):
            raise ConfigError(
                f'nearest_classes: score_fn returned {tuple(scores.shape)}, '
                f'expected {(r1 - r0, num_classes)}')
        rows = torch.arange(r1 - r0)
        scores[rows, rows + r0] = -math.inf
        out[r0 - lo:r1 - lo] = scores.topk(k, dim=1).indices
    if world_size > 1:
        out = torch.cat(all_gather(out))
    return out[:num_classes].numpy()


@DATA_SAMPLERS.register_module()
class GraphSampler(Sampler):
    """QAConv-GS batches: an anchor class and its ``P - 1`` nearest classes, K each.

    Needs :class:`~oaml_mm.engine.hooks.GraphSamplerHook` in ``custom_hooks``::

        train_dataloader = dict(
            batch_size=64,
            sampler=dict(type='GraphSampler', batch_size=64, num_instances=4))
        custom_hooks = [dict(type='GraphSamplerHook')]

    Every class is the anchor of one batch per epoch (``len(sampler) ==
    num_classes * batch_size`` on one rank; a class also appears as a neighbour in
    other batches). Under DDP the shuffled anchors are dealt round-robin to the
    ranks, so the ranks' batches are disjoint; with ``round_up`` a rank pads with
    its own first anchors so all ranks yield the same number of batches. A class
    with fewer than K images repeats its images.

    Args:
        dataset (Sized): A data set with ``get_gt_labels()`` or ``get_cat_ids()``.
        batch_size (int): Images per batch per rank (P * K).
        num_instances (int): K. Defaults to 4.
        seed (int, optional): Shared seed; ``None`` draws one and syncs it.
        round_up (bool): Pad ranks to equal length instead of dropping anchors.
            Defaults to True.
        rank (int, optional): Override of the DDP rank (tests, custom launchers).
        world_size (int, optional): Override of the DDP world size.

    Raises:
        ConfigError: ``batch_size`` not a multiple of ``num_instances``, fewer than
            ``P`` classes, or fewer classes than ranks.
    """

    def __init__(self,
                 dataset: Sized,
                 batch_size: int,
                 num_instances: int = 4,
                 seed: Optional[int] = None,
                 round_up: bool = True,
                 rank: Optional[int] = None,
                 world_size: Optional[int] = None) -> None:
        self.rank, self.world_size = pk_layout(
            'GraphSampler', batch_size, num_instances, rank, world_size)
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.num_instances = int(num_instances)
        self.classes_per_batch = self.batch_size // self.num_instances
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.round_up = round_up
        self.epoch = 0

        ids, order, starts, counts = group_labels(dataset_labels(dataset))
        self.classes = ids
        self._order, self._starts, self._counts = order, starts, counts
        # Class position of every entry of ``_order`` (0..N-1, non-decreasing).
        self._labels_sorted = np.repeat(np.arange(len(ids)), counts)
        n = len(ids)
        if n < max(self.classes_per_batch, 2) or n < self.world_size:
            raise ConfigError(
                f'GraphSampler: {n} classes cannot fill batches of '
                f'{self.classes_per_batch} classes on {self.world_size} ranks')
        self.anchors_per_rank = math.ceil(n / self.world_size) if round_up \
            else n // self.world_size
        self._builder: Optional[GraphBuilder] = None
        self._graphs: Dict[int, np.ndarray] = {}
        # Epochs before this one are only replayed to skip their batches.
        self._replay_before = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (called by ``DistSamplerSeedHook`` / mmengine's loops)."""
        self.epoch = int(epoch)

    def set_graph_builder(self, builder: Optional[GraphBuilder]) -> None:
        """Install the callable that scores the representatives (the hook does)."""
        self._builder = builder

    def representatives(self, epoch: Optional[int] = None) -> np.ndarray:
        """One dataset index per class (class order of ``self.classes``), [N]."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.RandomState(mix_seeds(self.seed, epoch, 0) % 2**32)
        offsets = (rng.random_sample(self.num_classes) * self._counts).astype(
            np.int64)
        return self._order[self._starts + np.minimum(offsets, self._counts - 1)]

    def set_graph(self, epoch: int, neighbours: np.ndarray) -> None:
        """Use ``neighbours`` [N, >= P - 1] (class positions) for ``epoch``."""
        table = np.asarray(neighbours, np.int64)
        need = self.classes_per_batch - 1
        if table.ndim != 2 or table.shape[0] != self.num_classes or \
                table.shape[1] < need or \
                (table.size and (table.min() < 0
                                 or table.max() >= self.num_classes)):
            raise ConfigError(
                f'GraphSampler: neighbour table {table.shape} must be '
                f'[{self.num_classes}, >= {need}] of class positions')
        self._graphs = {int(epoch): table[:, :need]}

    def state_dict(self) -> dict:
        """The current epoch's graph, as tensors (``weights_only`` checkpoints)."""
        if self.epoch not in self._graphs:
            return {}
        return dict(epoch=self.epoch, seed=self.seed,
                    neighbours=torch.from_numpy(self._graphs[self.epoch]))

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; a graph built with another seed is ignored."""
        if not state:
            return
        if int(state['seed']) != self.seed:
            warnings.warn('GraphSampler: the checkpoint graph was drawn with seed '
                          f"{int(state['seed'])}, this run uses {self.seed}; "
                          'rebuilding it')
            return
        epoch = int(state['epoch'])
        self.set_graph(epoch, state['neighbours'].numpy())
        self._replay_before = epoch

    def _graph(self) -> np.ndarray:
        epoch = self.epoch
        if epoch in self._graphs:
            return self._graphs[epoch]
        need = self.classes_per_batch - 1
        if epoch < self._replay_before:
            # A resumed iteration-based loop replays these batches only to skip
            # them: any table will do, and scoring would cost a full epoch start.
            return (np.arange(self.num_classes)[:, None] +
                    np.arange(1, need + 1)[None]) % self.num_classes
        if self._builder is None:
            raise ConfigError(
                'GraphSampler has no graph builder: add '
                "dict(type='GraphSamplerHook') to custom_hooks")
        reps = self.representatives(epoch)
        self.set_graph(epoch, self._builder(reps))
        return self._graphs[epoch]

    def batches(self) -> np.ndarray:
        """This rank's batches of the current epoch: [batches, P*K] dataset indices.

        Row ``b`` holds its anchor's K images, then each neighbour's K images.
        """
        graph = self._graph()
        rng = np.random.RandomState(mix_seeds(self.seed, self.epoch, 1) % 2**32)
        anchors = rng.permutation(self.num_classes)
        mine = anchors[self.rank::self.world_size]
        if len(mine) < self.anchors_per_rank:
            mine = np.resize(mine, self.anchors_per_rank)
        mine = mine[:self.anchors_per_rank]
        K, P = self.num_instances, self.classes_per_batch
        classes = np.concatenate((mine[:, None], graph[mine]), axis=1).ravel()
        # Each class's images in a fresh random order; the t-th time a class is
        # drawn this epoch it takes the next K of them, cycling (the public
        # QAConv-GS code walks its classes' images the same way), so K images of
        # one batch are distinct whenever the class has K.
        members = np.lexsort((rng.random_sample(len(self._order)),
                              self._labels_sorted))
        members = self._order[members]
        by_class = np.argsort(classes, kind='stable')
        sorted_cls = classes[by_class]
        first = np.searchsorted(sorted_cls, sorted_cls, side='left')
        occurrence = np.empty_like(classes)
        occurrence[by_class] = np.arange(len(classes)) - first
        counts = self._counts[classes][:, None]
        offsets = (occurrence[:, None] * K + np.arange(K)[None]) % counts
        out = members[self._starts[classes][:, None] + offsets]
        return out.reshape(len(mine), P * K)

    def __iter__(self) -> Iterator[int]:
        return iter(self.batches().ravel().tolist())

    def __len__(self) -> int:
        return self.anchors_per_rank * self.batch_size
