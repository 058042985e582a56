"""P identities x K images per batch, identities disjoint across DDP ranks.

The batch composition of metric learning with in-batch pairs (Hermans et al., "In
Defense of the Triplet Loss for Person Re-Identification", 2017; QAConv's pairwise
matching loss, Liao & Shao 2020): every batch holds ``P = batch_size / K`` distinct
identities with ``K`` images each, so every image has positives in its batch
(docs/datasets.md).
"""
import math
from typing import Iterator, Optional, Sized, Tuple

import numpy as np
from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import Sampler

from oaml_mm.errors import ConfigError
from oaml_mm.registry import DATA_SAMPLERS

__all__ = ['PKSampler', 'dataset_labels', 'group_labels']


def dataset_labels(dataset: Sized) -> np.ndarray:
    """Identity label of every sample, from ``get_gt_labels()`` or ``get_cat_ids()``.

    Neither decodes images for the oaml_mm data sets. A ``ConcatDataset`` (e.g. a
    ``.rec`` training set plus a labelled occluded set sharing its identities) gives
    the labels of its parts in order.
    """
    if hasattr(dataset, 'get_gt_labels'):
        return np.asarray(dataset.get_gt_labels(), np.int64)
    parts = getattr(dataset, 'datasets', None)
    if isinstance(parts, (list, tuple)) and parts:
        return np.concatenate([dataset_labels(d) for d in parts])
    if hasattr(dataset, 'get_cat_ids'):
        return np.asarray([dataset.get_cat_ids(i)[0]
                           for i in range(len(dataset))], np.int64)
    raise ConfigError(f'{type(dataset).__name__} exposes neither get_gt_labels()'
                      ' nor get_cat_ids(); PKSampler needs identity labels')


def group_labels(
        labels: np.ndarray
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sample indices grouped by identity, as the P x K samplers draw them.

    Args:
        labels (np.ndarray): ``(N,)`` integer identity label of every sample
            (:func:`dataset_labels`).

    Returns:
        tuple: ``(ids, order, starts, counts)``: the ``(C,)`` distinct labels in
        ascending order; ``(N,)`` sample indices sorted by label (stable, so a
        class keeps its samples' order); ``(C,)`` where each class begins in
        ``order`` and how many samples it has: class ``c``'s samples are
        ``order[starts[c]:starts[c] + counts[c]]``.

    Examples:
        >>> ids, order, starts, counts = group_labels(np.array([7, 3, 7, 3, 3]))
        >>> ids.tolist(), order.tolist(), starts.tolist(), counts.tolist()
        ([3, 7], [1, 3, 4, 0, 2], [0, 3], [3, 2])
    """
    order = np.argsort(labels, kind='stable')
    ids, starts, counts = np.unique(labels[order], return_index=True,
                                    return_counts=True)
    return ids, order, starts, counts


def pk_layout(name: str, batch_size: int, num_instances: int,
              rank: Optional[int], world_size: Optional[int]) -> Tuple[int, int]:
    """Check a P x K batch layout and resolve this process's rank and world size.

    Args:
        name (str): The sampler, for messages.
        batch_size (int): Images per batch per rank (P * K).
        num_instances (int): K, images per identity.
        rank (int, optional): Override of the DDP rank.
        world_size (int, optional): Override of the DDP world size.

    Returns:
        tuple: ``(rank, world_size)``.

    Raises:
        ConfigError: ``batch_size`` is not a multiple of ``num_instances``, or the
            rank lies outside the world size.
    """
    if batch_size is None or num_instances < 1 or batch_size % num_instances:
        raise ConfigError(
            f'{name}: batch_size ({batch_size}) must be a multiple of '
            f'num_instances ({num_instances})')
    dist_rank, dist_world = get_dist_info()
    rank = dist_rank if rank is None else int(rank)
    world_size = dist_world if world_size is None else int(world_size)
    if not 0 <= rank < world_size:
        raise ConfigError(f'rank {rank} outside world size {world_size}')
    return rank, world_size


@DATA_SAMPLERS.register_module()
class PKSampler(Sampler):
    """Sample P identities x K instances per batch, reshuffled every epoch.

    Each epoch the identities are permuted from ``seed + epoch`` and dealt round-robin
    to the ranks, so ranks never share an identity within an epoch. An identity with
    fewer than K images is drawn with replacement. Every rank yields the same number of
    batches (``len(sampler) == batches * batch_size``): with ``round_up`` a rank pads
    its identity list with its own first identities, otherwise the remainder is
    dropped for this epoch.

    ``batch_size`` must equal the DataLoader's::

        train_dataloader = dict(
            batch_size=64, num_workers=4,
            sampler=dict(type='PKSampler', batch_size=64, num_instances=4))

    Args:
        dataset (Sized): A data set with ``get_gt_labels()`` or ``get_cat_ids()``.
        batch_size (int): Images per batch per rank (P * K).
        num_instances (int): K. Defaults to 4.
        shuffle (bool): Permute identities and images. Defaults to True.
        seed (int, optional): Shared seed; ``None`` draws one and syncs it across
            ranks.
        round_up (bool): Pad to whole batches instead of dropping. Defaults to True.
        rank (int, optional): Override of the DDP rank (tests, custom launchers).
        world_size (int, optional): Override of the DDP world size.
    """

    def __init__(self,
                 dataset: Sized,
                 batch_size: int,
                 num_instances: int = 4,
                 shuffle: bool = True,
                 seed: Optional[int] = None,
                 round_up: bool = True,
                 rank: Optional[int] = None,
                 world_size: Optional[int] = None) -> None:
        self.rank, self.world_size = pk_layout(
            'PKSampler', batch_size, num_instances, rank, world_size)
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.num_instances = int(num_instances)
        self.num_identities_per_batch = self.batch_size // self.num_instances
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.round_up = round_up
        self.epoch = 0

        ids, order, starts, counts = group_labels(dataset_labels(dataset))
        self.identities = ids
        self._order = order
        self._starts = starts
        self._counts = counts
        n_ids = len(ids)
        if n_ids < self.world_size:
            raise ConfigError(f'{n_ids} identities cannot be split over '
                              f'{self.world_size} ranks')
        per_rank = math.ceil(n_ids / self.world_size) if round_up \
            else n_ids // self.world_size
        P = self.num_identities_per_batch
        self.num_batches = math.ceil(per_rank / P) if round_up \
            else per_rank // P
        self.ids_per_rank = self.num_batches * P

    def _rank_identities(self, rng: np.random.RandomState) -> np.ndarray:
        n_ids = len(self.identities)
        order = rng.permutation(n_ids) if self.shuffle else np.arange(n_ids)
        mine = order[self.rank::self.world_size]
        if len(mine) < self.ids_per_rank:
            # Own identities only, so ranks stay disjoint; taken from the front so the
            # last batch does not repeat one of its own identities.
            reps = math.ceil(self.ids_per_rank / len(mine))
            mine = np.tile(mine, reps)
        return mine[:self.ids_per_rank]

    def __iter__(self) -> Iterator[int]:
        rng = np.random.RandomState((self.seed + self.epoch) % (2**32))
        K = self.num_instances
        out = np.empty(self.ids_per_rank * K, np.int64)
        for j, u in enumerate(self._rank_identities(rng)):
            members = self._order[self._starts[u]:self._starts[u] + self._counts[u]]
            if not self.shuffle:
                pick = np.resize(members, K)
            else:
                pick = rng.choice(members, K, replace=len(members) < K)
            out[j * K:(j + 1) * K] = pick
        return iter(out.tolist())

    def __len__(self) -> int:
        return self.ids_per_rank * self.num_instances

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's permutation (called by ``DistSamplerSeedHook``)."""
        self.epoch = int(epoch)
