"""PKSampler: P x K batches, replacement, per-epoch reshuffle, disjoint ranks."""
import unittest

import numpy as np

from oaml_mm.datasets import PKSampler
from oaml_mm.datasets.samplers.pk_sampler import dataset_labels, group_labels
from oaml_mm.errors import ConfigError


class _Labels:

    def __init__(self, labels):
        self.labels = np.asarray(labels)

    def __len__(self):
        return len(self.labels)

    def get_gt_labels(self):
        return self.labels


# 10 identities; identity 3 has only 2 images, identity 7 only 1
LABELS = [i for i in range(10) for _ in range(6 if i not in (3, 7) else
                                              (2 if i == 3 else 1))]


class TestPKSampler(unittest.TestCase):

    def _batches(self, sampler):
        idx = list(sampler)
        self.assertEqual(len(idx), len(sampler))
        bs = sampler.batch_size
        return [idx[i:i + bs] for i in range(0, len(idx), bs)]

    def test_single_rank(self):
        ds = _Labels(LABELS)
        s = PKSampler(ds, batch_size=8, num_instances=4, seed=0, rank=0,
                      world_size=1)
        self.assertEqual(len(s), 5 * 8)  # 10 identities, P = 2
        seen = set()
        for batch in self._batches(s):
            labels = ds.labels[batch]
            ids = labels.reshape(2, 4)
            self.assertTrue((ids == ids[:, :1]).all())  # K of one identity
            self.assertEqual(len(set(ids[:, 0])), 2)  # P distinct identities
            seen.update(ids[:, 0].tolist())
        self.assertEqual(seen, set(range(10)))
        # identity 7 has one image: drawn with replacement
        idx7 = [i for i in s if ds.labels[i] == 7]
        self.assertEqual(len(set(idx7)), 1)

    def test_epoch_reshuffle_and_determinism(self):
        ds = _Labels(LABELS)
        a = PKSampler(ds, batch_size=8, seed=3, rank=0, world_size=1)
        b = PKSampler(ds, batch_size=8, seed=3, rank=0, world_size=1)
        self.assertEqual(list(a), list(b))
        first = list(a)
        a.set_epoch(1)
        self.assertNotEqual(first, list(a))
        b.set_epoch(1)
        self.assertEqual(list(a), list(b))

    def test_two_ranks_disjoint_equal_length(self):
        ds = _Labels(LABELS + [10] * 4)  # 11 identities: uneven split
        for epoch in range(3):
            samplers = [PKSampler(ds, batch_size=8, seed=1, rank=r,
                                  world_size=2) for r in range(2)]
            ids = []
            for s in samplers:
                s.set_epoch(epoch)
                ids.append(set(ds.labels[list(s)].tolist()))
                self.assertEqual(len(list(s)), len(s))
            self.assertEqual(len(samplers[0]), len(samplers[1]))
            self.assertEqual(len(samplers[0]), 3 * 8)  # ceil(11/2)=6 ids = 3 batches
            self.assertFalse(ids[0] & ids[1])
            self.assertEqual(ids[0] | ids[1], set(range(11)))

    def test_no_round_up(self):
        ds = _Labels(LABELS)
        s = PKSampler(ds, batch_size=8, seed=0, round_up=False, rank=1,
                      world_size=2)
        self.assertEqual(len(s), 2 * 8)  # 5 ids per rank -> 2 whole batches
        self.assertEqual(len(list(s)), 16)

    def test_concat_dataset_labels(self):
        """A ConcatDataset (clean .rec + labelled occluded set) gives its parts'
        labels in order, so an identity's images from both parts share batches."""

        class _Concat:
            def __init__(self, parts):
                self.datasets = parts

            def __len__(self):
                return sum(len(d) for d in self.datasets)

        ds = _Concat([_Labels([0, 0, 1, 1]), _Labels([1, 2, 2, 0])])
        np.testing.assert_array_equal(dataset_labels(ds),
                                      [0, 0, 1, 1, 1, 2, 2, 0])
        s = PKSampler(ds, batch_size=4, num_instances=2, seed=0, rank=0,
                      world_size=1)
        labels = dataset_labels(ds)
        for b in range(0, len(s), 4):
            batch = labels[list(s)[b:b + 4]]
            self.assertEqual(len(set(batch.tolist())), 2)
        with self.assertRaises(ConfigError):
            dataset_labels(object())

    def test_group_labels(self):
        # Both P x K samplers draw a class's samples from one slice of `order`;
        # the sort is stable, so a class keeps its samples in data set order.
        ids, order, starts, counts = group_labels(
            np.array([7, 3, 7, 3, 3, 9], np.int64))
        self.assertEqual(ids.tolist(), [3, 7, 9])
        self.assertEqual(order.tolist(), [1, 3, 4, 0, 2, 5])
        self.assertEqual(starts.tolist(), [0, 3, 5])
        self.assertEqual(counts.tolist(), [3, 2, 1])

    def test_bad_config(self):
        with self.assertRaises(ConfigError):
            PKSampler(_Labels(LABELS), batch_size=6, num_instances=4)
        with self.assertRaises(ConfigError):
            PKSampler(_Labels([0, 0]), batch_size=4, rank=0, world_size=2)


if __name__ == '__main__':
    unittest.main()
