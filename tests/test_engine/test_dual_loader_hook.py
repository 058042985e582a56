"""DualLoaderHook: 80/20 split, clean part unoccluded, sharding, resume determinism."""
import os.path as osp
import tempfile
import unittest
from types import SimpleNamespace

import numpy as np
import torch

from oaml_mm.datasets import write_occlusion_mask_sample
from oaml_mm.datasets.samplers import StreamSampler
from oaml_mm.datasets.transforms import visibility_to_grid
from oaml_mm.engine.hooks import DualLoaderHook
from oaml_mm.errors import ConfigError


def _make_occluded(root, n=12, size=32):
    for i in range(n):
        img = np.full((size, size, 3), i * 10, np.uint8)
        mask = np.ones((size, size), np.float32)
        mask[size // 2:] = 0
        write_occlusion_mask_sample(root, f's{i:02d}', img, mask)


class TestDualLoaderHook(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.occ = osp.join(cls.tmp.name, 'occ')
        cls.clean = osp.join(cls.tmp.name, 'clean')
        _make_occluded(cls.occ)
        _make_occluded(cls.clean, n=7)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def _hook(self, num_workers=0, ratio=0.8, batch_size=10):
        occ = dict(num_workers=num_workers, dataset=dict(
            type='OcclusionMaskDataset', data_root=self.occ,
            pipeline=[dict(type='RandomOcclusion', prob=0.5),
                      dict(type='FaceRandomFlip'),
                      dict(type='PackFaceInputs')]))
        # The clean set's masks and occlusion transforms must not reach the batch.
        clean = dict(dataset=dict(
            type='OcclusionMaskDataset', data_root=self.clean,
            pipeline=[dict(type='MedicalMaskOcclusion', prob=1.0),
                      dict(type='PackFaceInputs')]))
        hook = DualLoaderHook(occ, clean, occluded_ratio=ratio,
                              batch_size=batch_size, seed=123)
        hook.build_streams(batch_size)
        return hook

    def test_ratio_and_masks(self):
        hook = self._hook()
        batch = {'inputs': [], 'data_samples': []}
        runner = SimpleNamespace(epoch=0)
        hook.before_train_iter(runner, 0, batch)
        occ = batch['occlusion']
        self.assertEqual(len(occ['inputs']), 10)
        samples = occ['data_samples']
        for ds in samples[:8]:
            self.assertTrue(ds.img_path.startswith(self.occ))
            self.assertTrue(torch.all(ds.gt_visibility[0, 4:] == 0))
        for ds in samples[8:]:
            self.assertTrue(ds.img_path.startswith(self.clean))
            self.assertTrue(torch.equal(ds.gt_visibility, torch.ones(1, 7, 7)))
            self.assertEqual(ds.occlusion_type, 'none')
        for x in occ['inputs'][8:]:
            # no medical mask was pasted: the clean images stay flat
            self.assertEqual(int(x.max() - x.min()), 0)
        self.assertEqual(len(self._hook(ratio=0.5).next_batch(0, 0)['inputs']),
                         10)
        with self.assertRaises(ConfigError):
            DualLoaderHook({}, occluded_ratio=1.5)

    def test_clean_mask_follows_the_models_grid(self):
        # A clean sample gets an all-ones mask on the model's grid (4x4 maps
        # of 64x64 faces), not on an assumed 7x7 (nor its 7x7 packed one).
        occ = dict(dataset=dict(type='OcclusionMaskDataset', data_root=self.occ,
                                pipeline=[dict(type='PackFaceInputs')]))
        clean = dict(dataset=dict(
            type='OcclusionMaskDataset', data_root=self.clean,
            pipeline=[dict(type='PackFaceInputs', default_visibility=None)]))
        hook = DualLoaderHook(occ, clean, occluded_ratio=0.5, batch_size=4,
                              seed=1)
        self.assertIsNone(hook.grid)  # no model yet
        model = SimpleNamespace(backbone=SimpleNamespace(map_size=4))
        hook.before_train(SimpleNamespace(
            model=SimpleNamespace(module=model), cfg=None, seed=1,
            train_dataloader=SimpleNamespace(batch_size=4)))
        self.assertEqual(hook.grid, 4)
        samples = hook.next_batch(0, 0)['data_samples']
        for ds in samples[2:]:
            self.assertEqual(ds.occlusion_type, 'none')
            self.assertTrue(torch.equal(ds.gt_visibility, torch.ones(1, 4, 4)))

    def test_clean_occluders_keep_their_masks(self):
        occ = dict(dataset=dict(
            type='OcclusionMaskDataset', data_root=self.occ,
            pipeline=[dict(type='PackFaceInputs')]))
        # The clean set's own masks are all ones here; RandomOcclusion may stay in
        # its pipeline, MedicalMaskOcclusion is still removed.
        clean_root = osp.join(self.tmp.name, 'clean_visible')
        for i in range(9):
            write_occlusion_mask_sample(
                clean_root, f'c{i}', np.full((32, 32, 3), 100, np.uint8),
                np.ones((32, 32), np.float32))
        clean = dict(dataset=dict(
            type='OcclusionMaskDataset', data_root=clean_root,
            pipeline=[dict(type='MedicalMaskOcclusion', prob=1.0),
                      dict(type='RandomOcclusion', prob=0.5,
                           textures=('solid', ), soft_edge_prob=0.0),
                      dict(type='PackFaceInputs')]))
        hook = DualLoaderHook(occ, clean, occluded_ratio=0.25, batch_size=8,
                              seed=3, clean_occluders=['RandomOcclusion'])
        hook.build_streams(8)
        kinds = set()
        for step in range(3):
            batch = hook.next_batch(0, step)
            for x, ds in zip(batch['inputs'][2:], batch['data_samples'][2:]):
                flat = (x == 100).all(0).float()  # untouched pixels
                if 'random' in ds.occlusion_type.split('+'):
                    kinds.add('random')
                    # the target is the mask of exactly the painted pixels
                    torch.testing.assert_close(
                        ds.gt_visibility[0],
                        torch.from_numpy(visibility_to_grid(flat.numpy())),
                        atol=1e-6, rtol=0)
                    self.assertLess(float(ds.gt_visibility.min()), 1.0)
                else:
                    kinds.add('none')
                    self.assertEqual(ds.occlusion_type, 'none')
                    self.assertTrue(bool(flat.all()))
                    self.assertTrue(torch.equal(ds.gt_visibility,
                                                torch.ones(1, 7, 7)))
        self.assertEqual(kinds, {'random', 'none'})
        with self.assertRaises(ConfigError):
            DualLoaderHook(occ, clean, clean_occluders=['Cutout'])
        with self.assertRaises(ConfigError):
            DualLoaderHook(occ, clean, clean_occluders='RandomOcclusion')

    def _keys(self, batch):
        return [d.key for d in batch['data_samples']], \
            torch.stack(batch['inputs'])

    def test_resume_equals_uninterrupted(self):
        full = self._hook()
        steps = [self._keys(full.next_batch(0, s)) for s in range(5)]
        resumed = self._hook(num_workers=1)  # workers must not change the draw
        for s in (3, 4):
            keys, x = self._keys(resumed.next_batch(0, s))
            self.assertEqual(keys, steps[s][0])
            self.assertTrue(torch.equal(x, steps[s][1]))
        self.assertNotEqual(self._keys(full.next_batch(1, 0))[0][:8],
                            steps[0][0][:8])

    def test_restart_when_exhausted(self):
        hook = self._hook()
        keys = []
        for s in range(4):  # 4 x 8 occluded samples > 12 images
            keys += self._keys(hook.next_batch(0, s))[0][:8]
        # each pass over the 12 images uses each once
        self.assertEqual(sorted(keys[:12]), sorted(set(keys[:12])))
        self.assertEqual(len(set(keys)), 12)

    def test_stream_sampler_shards(self):
        per_rank = []
        for rank in range(2):
            s = StreamSampler(11, seed=5, epoch=0, start=0, rank=rank,
                              world_size=2)
            it = iter(s)
            per_rank.append([next(it)[1] for _ in range(s.shard_len)])
        self.assertEqual(len(per_rank[0]), 6)
        self.assertEqual(set(per_rank[0]) | set(per_rank[1]), set(range(11)))
        self.assertFalse(set(per_rank[0]) & set(per_rank[1]))
        late = iter(StreamSampler(11, 5, 0, start=8, rank=0, world_size=2))
        first = iter(StreamSampler(11, 5, 0, start=0, rank=0, world_size=2))
        seq = [next(first) for _ in range(10)]
        self.assertEqual([next(late) for _ in range(2)], seq[8:10])


if __name__ == '__main__':
    unittest.main()
