"""RandomOcclusion: exact masks, covered area, placement, determinism, arguments."""
import unittest

import numpy as np
import torch

from oaml_mm.datasets.transforms import (PackFaceInputs, RandomOcclusion,
                                         visibility_to_grid)
from oaml_mm.datasets.transforms.random_occlusion import SHAPES, TEXTURES
from oaml_mm.errors import ConfigError
from oaml_mm.registry import TRANSFORMS


def _noise_img(h=112, w=112, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(
        np.uint8)


class TestRandomOcclusion(unittest.TestCase):

    def _run(self, t, img, seed, **extra):
        np.random.seed(seed)
        return t(dict(img=img.copy(), **extra))

    def test_changes_only_where_the_mask_says(self):
        img = _noise_img()
        t = RandomOcclusion(prob=1.0)
        for seed in range(40):
            out = self._run(t, img, seed)
            vis = out['visibility_mask']
            self.assertEqual(vis.dtype, np.float32)
            self.assertTrue(((vis >= 0) & (vis <= 1)).all())
            self.assertLess(vis.min(), 1.0)
            changed = (out['img'] != img).any(-1)
            self.assertFalse(changed[vis == 1].any(), seed)
            # Fully covered pixels are the occluder's (a noise image matches a
            # texture by chance on very few pixels).
            self.assertGreater(changed[vis == 0].mean(), 0.9, seed)
            self.assertEqual(out['occlusion_type'], 'random')
            packed = PackFaceInputs()(dict(out))
            np.testing.assert_array_equal(
                packed['data_samples'].gt_visibility[0].numpy(),
                visibility_to_grid(vis))

    def test_hard_solid_occluder_is_exact(self):
        img = _noise_img()
        t = RandomOcclusion(prob=1.0, max_occluders=1, textures=('solid', ),
                            soft_edge_prob=0.0)
        for seed in range(20):
            out = self._run(t, img, seed)
            vis = out['visibility_mask']
            self.assertEqual(set(np.unique(vis).tolist()) - {0.0, 1.0}, set())
            covered = out['img'][vis == 0]
            # One colour exactly on the mask, the image untouched elsewhere.
            self.assertEqual(len(np.unique(covered, axis=0)), 1, seed)
            np.testing.assert_array_equal(out['img'][vis == 1], img[vis == 1])

    def test_area_range_for_every_shape(self):
        img = _noise_img(64, 80)
        for shape in SHAPES:
            for area in ((0.05, 0.15), (0.3, 0.5)):
                t = RandomOcclusion(prob=1.0, area_range=area, shapes=(shape, ))
                for seed in range(25):
                    vis = self._run(t, img, seed)['visibility_mask']
                    covered = (vis < 1).mean()
                    self.assertTrue(area[0] <= covered <= area[1],
                                    (shape, area, seed, covered))

    def test_every_texture_paints(self):
        img = _noise_img()
        for texture in TEXTURES:
            t = RandomOcclusion(prob=1.0, textures=(texture, ))
            out = self._run(t, img, 3)
            changed = (out['img'] != img).any(-1)
            self.assertGreater(changed.mean(), 0.04, texture)

    def test_reaches_every_cell(self):
        # Eyes, nose, mouth, forehead, cheeks and edges: each 7 x 7 cell of the
        # face is covered by some draw.
        img = _noise_img()
        t = RandomOcclusion(prob=1.0)
        hit = np.zeros((7, 7), bool)
        for seed in range(150):
            hit |= visibility_to_grid(self._run(t, img, seed)
                                      ['visibility_mask']) < 0.5
        self.assertTrue(hit.all(), hit)

    def test_prob(self):
        img = _noise_img(32, 32)
        results = dict(img=img)
        self.assertIs(RandomOcclusion(prob=0.0)(results), results)
        self.assertIs(results['img'], img)
        self.assertNotIn('visibility_mask', results)
        np.random.seed(0)
        t = RandomOcclusion(prob=0.5)
        hits = sum('visibility_mask' in t(dict(img=img.copy()))
                   for _ in range(200))
        self.assertTrue(70 < hits < 130, hits)

    def test_combines_with_an_existing_mask(self):
        img = _noise_img()
        prior = np.ones((112, 112), np.float32)
        prior[:30] = 0
        prior[30:60] = 0.5
        t = RandomOcclusion(prob=1.0)
        for seed in range(5):
            alone = self._run(t, img, seed)
            both = self._run(t, img, seed, visibility_mask=prior.copy(),
                             occlusion_type='medical_mask')
            np.testing.assert_array_equal(both['img'], alone['img'])
            np.testing.assert_allclose(both['visibility_mask'],
                                       prior * alone['visibility_mask'],
                                       atol=1e-7)
            self.assertEqual(both['occlusion_type'], 'medical_mask+random')

    def test_deterministic_under_a_seed(self):
        img = _noise_img()
        t = RandomOcclusion(prob=1.0)
        a, b = self._run(t, img, 7), self._run(t, img, 7)
        np.testing.assert_array_equal(a['img'], b['img'])
        np.testing.assert_array_equal(a['visibility_mask'], b['visibility_mask'])
        c = self._run(t, img, 8)
        self.assertFalse(np.array_equal(a['visibility_mask'],
                                        c['visibility_mask']))

    def test_dtype_and_shape(self):
        t = RandomOcclusion(prob=1.0)
        out = self._run(t, _noise_img(96, 80), 1)
        self.assertEqual(out['img'].shape, (96, 80, 3))
        self.assertEqual(out['img'].dtype, np.uint8)
        self.assertEqual(out['visibility_mask'].shape, (96, 80))
        gray = _noise_img(40, 40)[..., 0]
        out = self._run(t, gray, 1)
        self.assertEqual(out['img'].shape, (40, 40))
        self.assertEqual(out['img'].dtype, np.uint8)
        vis = out['visibility_mask']
        self.assertFalse((out['img'] != gray)[vis == 1].any())

    def test_registered_and_bad_arguments(self):
        t = TRANSFORMS.build(dict(type='RandomOcclusion', prob=0.3))
        self.assertIsInstance(t, RandomOcclusion)
        self.assertIn('prob=0.3', repr(t))
        for bad in (dict(prob=1.5), dict(prob='x'), dict(soft_edge_prob=-0.1),
                    dict(max_occluders=0), dict(max_occluders=1.5),
                    dict(max_tries=0), dict(area_range=(0.0, 0.5)),
                    dict(area_range=(0.6, 0.5)), dict(area_range=(0.1, 1.2)),
                    dict(area_range=0.3), dict(shapes=('triangle', )),
                    dict(shapes='polygon'), dict(shapes=()),
                    dict(textures=('plaid', ))):
            with self.subTest(**{k: str(v) for k, v in bad.items()}):
                with self.assertRaises(ConfigError):
                    RandomOcclusion(**bad)

    def test_grid_target_is_a_tensor_batch_can_stack(self):
        np.random.seed(0)
        out = PackFaceInputs()(RandomOcclusion(prob=1.0)(dict(
            img=_noise_img())))
        vis = out['data_samples'].gt_visibility
        self.assertEqual(tuple(vis.shape), (1, 7, 7))
        self.assertTrue(torch.all(vis <= 1) and bool(vis.min() < 1))


if __name__ == '__main__':
    unittest.main()
