"""GraphSampler: batches of nearest classes, resume, disjoint ranks, errors."""
import unittest

import numpy as np
import torch

from oaml_mm.datasets import GraphSampler, nearest_classes
from oaml_mm.errors import ConfigError
from oaml_mm.models.functional import normalize_maps
from oaml_mm.registry import MODELS


class _Labels:

    def __init__(self, labels):
        self.labels = np.asarray(labels)

    def __len__(self):
        return len(self.labels)

    def get_gt_labels(self):
        return self.labels


N_CLASSES, P, K = 12, 3, 2
# Class c's images are c*5 .. c*5+4, except class 4, which has one image.
LABELS = [c for c in range(N_CLASSES) for _ in range(1 if c == 4 else 5)]
# Clusters of P classes, scattered so that the answer is not "adjacent labels".
CLUSTER = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3])


def _class_maps(seed=0):
    """Maps of the classes: a cluster's classes share a pattern (+ small noise)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(4, 16, 7, 7, generator=g)
    noise = 0.3 * torch.randn(N_CLASSES, 16, 7, 7, generator=g)
    return normalize_maps(base[torch.as_tensor(CLUSTER)] + noise)


def _qaconv_builder(labels, calls=None):
    """Scores the representatives with the real QAConv matcher (eval mode)."""
    head = MODELS.build(dict(type='QAConvHead', in_channels=16)).eval()
    maps = _class_maps()

    def build(reps):
        if calls is not None:
            calls.append(reps.copy())
        rep_maps = maps[torch.as_tensor(labels[reps])]
        with torch.no_grad():
            return nearest_classes(
                lambda rows: head.match(rep_maps[rows], rep_maps),
                len(reps), P - 1, block_size=5)

    return build


class TestNearestClasses(unittest.TestCase):

    def test_line(self):
        x = torch.tensor([0., 1., 3., 10., 11.5])
        fn = lambda rows: -(x[rows, None] - x[None]).abs()  # noqa: E731
        table = nearest_classes(fn, 5, 2, block_size=2)
        np.testing.assert_array_equal(
            table, [[1, 2], [0, 2], [1, 0], [4, 2], [3, 2]])

    def test_ranks_share_rows(self):
        x = torch.arange(7.) ** 2
        fn = lambda rows: -(x[rows, None] - x[None]).abs()  # noqa: E731
        full = nearest_classes(fn, 7, 1, rank=0, world_size=1)
        # One rank of three scores only its own ceil(7/3) = 3 rows.
        seen = []

        def spy(rows):
            seen.append((rows.start, rows.stop))
            return fn(rows)

        part = nearest_classes(spy, 7, 1, rank=1, world_size=3)
        self.assertEqual(seen, [(3, 6)])
        np.testing.assert_array_equal(part[:3], full[3:6])

    def test_errors(self):
        fn = lambda rows: torch.zeros(3, 3)  # noqa: E731
        with self.assertRaises(ConfigError):
            nearest_classes(fn, 3, 3)
        with self.assertRaises(ConfigError):
            nearest_classes(lambda rows: torch.zeros(1, 2), 3, 1)


class TestGraphSampler(unittest.TestCase):

    def _sampler(self, **kw):
        kw.setdefault('seed', 7)
        s = GraphSampler(_Labels(LABELS), batch_size=P * K, num_instances=K,
                         **kw)
        s.set_graph_builder(_qaconv_builder(np.asarray(LABELS)))
        return s

    def test_batches_hold_nearest_classes(self):
        s = self._sampler()
        labels = np.asarray(LABELS)
        batches = s.batches()
        self.assertEqual(batches.shape, (N_CLASSES, P * K))
        self.assertEqual(len(list(s)), len(s))
        anchors = []
        for row in batches:
            cls = labels[row].reshape(P, K)
            # K images of each class, all of the anchor's cluster
            self.assertTrue(np.all(cls == cls[:, :1]))
            for imgs in row.reshape(P, K):
                if labels[imgs[0]] != 4:  # 5 images: K distinct ones
                    self.assertEqual(len(set(imgs.tolist())), K)
            anchors.append(cls[0, 0])
            self.assertEqual(set(cls[:, 0].tolist()),
                             set(np.flatnonzero(CLUSTER == CLUSTER[cls[0, 0]])))
        self.assertEqual(sorted(anchors), list(range(N_CLASSES)))
        # class 4 has one image: repeated
        self.assertTrue(np.all(batches[labels[batches] == 4] == 20))
        # a class drawn t times walks through its images: the first 5 of its
        # draws this epoch are its 5 images
        for c in (0, 7):
            drawn = batches[labels[batches] == c]
            self.assertGreaterEqual(len(drawn), 5)
            self.assertEqual(sorted(drawn[:5].tolist()),
                             list(np.flatnonzero(labels == c)))

    def test_representatives(self):
        s = self._sampler()
        labels = np.asarray(LABELS)
        reps = s.representatives(0)
        np.testing.assert_array_equal(labels[reps], np.arange(N_CLASSES))
        self.assertFalse(np.array_equal(
            np.stack([s.representatives(e) for e in range(5)]).std(0), 0))

    def test_deterministic_per_epoch_and_seed(self):
        a, b = self._sampler(), self._sampler()
        np.testing.assert_array_equal(a.batches(), b.batches())
        a.set_epoch(1)
        self.assertFalse(np.array_equal(a.batches(), b.batches()))
        c = self._sampler(seed=8)
        self.assertFalse(np.array_equal(c.batches(), b.batches()))

    def test_graph_built_once_per_epoch(self):
        calls = []
        s = GraphSampler(_Labels(LABELS), P * K, K, seed=1)
        s.set_graph_builder(_qaconv_builder(np.asarray(LABELS), calls))
        list(s)
        list(s)
        self.assertEqual(len(calls), 1)
        s.set_epoch(1)
        list(s)
        self.assertEqual(len(calls), 2)

    def test_resume_draws_same_batches(self):
        first = self._sampler()
        first.set_epoch(3)
        expected = first.batches()
        state = first.state_dict()
        self.assertIsInstance(state['neighbours'], torch.Tensor)

        resumed = GraphSampler(_Labels(LABELS), P * K, K, seed=7)

        def must_not_score(reps):
            raise AssertionError('the resumed run scored classes again')

        resumed.set_graph_builder(must_not_score)
        resumed.load_state_dict(state)
        # An iteration-based loop replays the earlier epochs to skip them.
        for epoch in range(3):
            resumed.set_epoch(epoch)
            self.assertEqual(len(list(resumed)), len(resumed))
        resumed.set_epoch(3)
        np.testing.assert_array_equal(resumed.batches(), expected)
        # The next epoch is scored again.
        resumed.set_epoch(4)
        with self.assertRaises(AssertionError):
            resumed.batches()

    def test_other_seed_state_ignored(self):
        first = self._sampler()
        self.assertEqual(first.state_dict(), {})  # nothing drawn yet
        first.batches()
        state = first.state_dict()
        other = GraphSampler(_Labels(LABELS), P * K, K, seed=99)
        with self.assertWarns(UserWarning):
            other.load_state_dict(state)
        with self.assertRaises(ConfigError):
            other.batches()  # no graph, no builder

    def test_ranks_disjoint(self):
        labels = np.asarray(LABELS)
        ranks = [self._sampler(rank=r, world_size=5) for r in range(5)]
        lengths = {len(s) for s in ranks}
        self.assertEqual(lengths, {3 * P * K})  # ceil(12 / 5) anchors each
        per_rank = []
        for s in ranks:
            b = s.batches()
            self.assertEqual(b.size, len(s))
            per_rank.append([tuple(labels[row]) for row in b])
        # Real anchors (the first 12 // 5 = 2 per rank, before padding) are
        # disjoint, and with padding each rank repeats only its own batches.
        anchors = [{row[0] for row in rows} for rows in per_rank]
        for i in range(5):
            for j in range(i + 1, 5):
                self.assertFalse(anchors[i] & anchors[j])
        self.assertEqual(set().union(*anchors), set(range(N_CLASSES)))

    def test_no_round_up(self):
        s = self._sampler(rank=0, world_size=5, round_up=False)
        self.assertEqual(s.batches().shape, (2, P * K))

    def test_bad_config(self):
        with self.assertRaises(ConfigError):
            GraphSampler(_Labels(LABELS), 5, 2, seed=0)
        with self.assertRaises(ConfigError):
            GraphSampler(_Labels([0, 0, 1]), 6, 2, seed=0)  # 2 classes, P=3
        with self.assertRaises(ConfigError):
            GraphSampler(_Labels(LABELS), 6, 2, seed=0, rank=2, world_size=2)
        s = GraphSampler(_Labels(LABELS), P * K, K, seed=0)
        with self.assertRaises(ConfigError):
            s.batches()  # no hook installed
        with self.assertRaises(ConfigError):
            s.set_graph(0, np.zeros((N_CLASSES, 1), np.int64))
        with self.assertRaises(ConfigError):
            s.set_graph(0, np.full((N_CLASSES, 2), N_CLASSES))


if __name__ == '__main__':
    unittest.main()
