"""The occlusion stream's sampler: an endless, rank-sharded, resumable position stream.

:class:`StreamSampler` yields ``(position, index)`` pairs and
:class:`PositionSeededDataset` seeds python/numpy/torch from the position before
each sample, so a resumed run draws exactly the samples and augmentations an
uninterrupted run draws, whatever the number of workers
(:class:`~oaml_mm.engine.hooks.DualLoaderHook` builds the stream from them).
"""
import random
from typing import Iterator, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from oaml_mm.errors import ConfigError

__all__ = ['StreamSampler', 'PositionSeededDataset', 'mix_seeds']


def mix_seeds(*values: int) -> int:
    """One 64-bit seed from several integers (numpy's ``SeedSequence``): the
    seed of a stream position, an epoch's permutation..."""
    return int(np.random.SeedSequence([int(v) % (2**63) for v in values])
               .generate_state(1)[0])


class StreamSampler(Sampler):
    """Infinite, rank-sharded ``(position, index)`` stream starting at ``start``.

    Pass ``p`` over the data uses the permutation seeded by ``(seed, epoch, p)``; rank
    ``r`` reads ``perm[r::world_size]`` padded to ``ceil(N / world_size)``.

    Args:
        length (int): Data set size.
        seed (int): Stream seed.
        epoch (int): Training epoch (reseeds the permutations).
        start (int): First position (samples already consumed by this rank).
        rank (int): This rank.
        world_size (int): Number of ranks.
    """

    def __init__(self, length: int, seed: int, epoch: int, start: int,
                 rank: int, world_size: int) -> None:
        if length < 1:
            raise ConfigError('the occlusion stream data set is empty')
        self.length = length
        self.seed = seed
        self.epoch = epoch
        self.start = start
        self.rank = rank
        self.world_size = world_size
        self.shard_len = -(-length // world_size)

    def shard(self, pass_idx: int) -> np.ndarray:
        rng = np.random.RandomState(mix_seeds(self.seed, self.epoch, pass_idx) % 2**32)
        mine = rng.permutation(self.length)[self.rank::self.world_size]
        return np.resize(mine, self.shard_len)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        pos = self.start
        pass_idx, offset = divmod(pos, self.shard_len)
        while True:
            shard = self.shard(pass_idx)
            for i in range(offset, self.shard_len):
                yield (pos, int(shard[i]))
                pos += 1
            pass_idx, offset = pass_idx + 1, 0


class PositionSeededDataset(Dataset):
    """Seeds python/numpy/torch from the stream position before each sample."""

    def __init__(self, dataset, seed: int, epoch: int, rank: int,
                 stream: int) -> None:
        self.dataset = dataset
        self.key = (seed, epoch, rank, stream)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: Tuple[int, int]):
        pos, idx = item
        s = mix_seeds(*self.key, pos)
        random.seed(s)
        np.random.seed(s % 2**32)
        torch.manual_seed(s)
        return self.dataset[idx]
