"""GraphSamplerHook: a tiny OAML model builds the graph; checkpoint round trip."""
import copy
import unittest
from types import SimpleNamespace

import numpy as np
import torch
from mmengine.dataset import pseudo_collate
from mmpretrain.structures import DataSample
from torch.utils.data import DataLoader, Dataset

from oaml_mm.datasets import GraphSampler
from oaml_mm.engine.hooks import GraphSamplerHook
from oaml_mm.errors import ConfigError
from oaml_mm.registry import MODELS
from tests.toy_components import tiny_oaml

TINY = tiny_oaml(num_classes=8)

N_CLASSES, PER_CLASS = 8, 3
TWIN = np.array([1, 0, 3, 2, 5, 4, 7, 6])  # class c's look-alike


class _Faces(Dataset):
    """Classes 2j and 2j+1 are the same random face with small pixel noise."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        faces = torch.randint(0, 256, (N_CLASSES // 2, 3, 112, 112),
                              generator=g)
        self.images = []
        for c in range(N_CLASSES):
            for _ in range(PER_CLASS):
                noise = torch.randint(-3, 4, (3, 112, 112), generator=g)
                self.images.append(
                    (faces[c // 2] + noise).clamp(0, 255).to(torch.uint8))
        self.labels = np.repeat(np.arange(N_CLASSES), PER_CLASS)

    def __len__(self):
        return len(self.labels)

    def get_gt_labels(self):
        return self.labels

    def __getitem__(self, i):
        return dict(inputs=self.images[i],
                    data_samples=DataSample().set_gt_label(int(self.labels[i])))


def _runner(seed=3):
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(TINY))
    model.train()
    ds = _Faces()
    sampler = GraphSampler(ds, batch_size=4, num_instances=2, seed=seed)
    loader = DataLoader(ds, batch_size=4, sampler=sampler,
                        collate_fn=pseudo_collate)
    return SimpleNamespace(model=model, train_dataloader=loader), sampler


class TestGraphSamplerHook(unittest.TestCase):

    def test_twins_share_batches(self):
        runner, sampler = _runner()
        hook = GraphSamplerHook(batch_size=5, block_size=3)
        hook.before_train(runner)
        labels = sampler.dataset.labels
        batches = sampler.batches()
        self.assertEqual(batches.shape, (N_CLASSES, 4))
        for row in batches:
            a, b = labels[row[0]], labels[row[2]]
            self.assertEqual(b, TWIN[a])
        # the model is back in training mode
        self.assertTrue(runner.model.training)
        # and one training batch goes through the loader
        self.assertEqual(len(next(iter(runner.train_dataloader))['inputs']), 4)

    def test_checkpoint_round_trip(self):
        runner, sampler = _runner()
        hook = GraphSamplerHook()
        hook.before_train(runner)
        sampler.set_epoch(2)
        expected = sampler.batches()
        ckpt = {}
        hook.before_save_checkpoint(runner, ckpt)
        self.assertEqual(int(ckpt['graph_sampler']['epoch']), 2)

        runner2, sampler2 = _runner()
        # Another model: it would find another graph, yet the checkpoint's wins.
        with torch.no_grad():
            for p in runner2.model.parameters():
                p.mul_(-1.0)
        hook2 = GraphSamplerHook()
        hook2.after_load_checkpoint(runner2, ckpt)  # before before_train
        hook2.before_train(runner2)
        sampler2.set_epoch(2)
        np.testing.assert_array_equal(sampler2.batches(), expected)

    def test_needs_graph_sampler_and_qaconv(self):
        runner, _ = _runner()
        runner.train_dataloader = DataLoader(_Faces(), batch_size=2)
        with self.assertRaises(ConfigError):
            GraphSamplerHook().before_train(runner)
        runner, _ = _runner()
        runner.model.qaconv_head = None
        with self.assertRaises(ConfigError):
            GraphSamplerHook().before_train(runner)
        with self.assertRaises(ConfigError):
            GraphSamplerHook(batch_size=0)


if __name__ == '__main__':
    unittest.main()
