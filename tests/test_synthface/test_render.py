import unittest

import numpy as np

from oaml_mm.datasets.transforms import visibility_to_grid
from oaml_mm.synthface.identity import sample_identities, stream_rng
from oaml_mm.synthface.occluders import OCCLUDERS, OCCLUSION_TYPES
from oaml_mm.synthface.render import (ARCFACE_TEMPLATE, encode_jpeg,
                                      render_face, sample_nuisance,
                                      similarity_transform)


class TestRender(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.ids = sample_identities(4, seed=0)

    def test_landmarks_near_template(self):
        errs = []
        for ident in self.ids:
            for j in range(5):
                nuis = sample_nuisance(stream_rng(0, 1, ident.index, j))
                r = render_face(ident, nuis)
                self.assertEqual(r.image.shape, (112, 112, 3))
                self.assertEqual(r.image.dtype, np.uint8)
                errs.append(np.linalg.norm(r.landmarks - ARCFACE_TEMPLATE, axis=1))
        errs = np.stack(errs)
        # aligned crops: a few pixels off the template, never far
        self.assertLess(errs.mean(), 5.0)
        self.assertLess(errs.max(), 14.0)
        self.assertGreater(errs.mean(), 0.3)  # nuisance does move them

    def test_nuisance_strength(self):
        ident = self.ids[0]
        rng_key = (0, 1, ident.index, 0)
        calm = sample_nuisance(stream_rng(*rng_key), 0.0)
        self.assertEqual(calm.roll, 0.0)
        self.assertEqual(calm.blur, 0.0)
        hard = [sample_nuisance(stream_rng(0, 1, 0, j), 1.0) for j in range(40)]
        self.assertGreater(max(abs(n.roll) for n in hard), 6.0)
        self.assertLess(min(n.jpeg_quality for n in hard), 60)

    def test_deterministic(self):
        ident = self.ids[1]
        a = render_face(ident, sample_nuisance(stream_rng(5, 1, 1, 2)), 'niqab',
                        stream_rng(5, 9))
        b = render_face(ident, sample_nuisance(stream_rng(5, 1, 1, 2)), 'niqab',
                        stream_rng(5, 9))
        np.testing.assert_array_equal(a.image, b.image)
        n = sample_nuisance(stream_rng(5, 1, 1, 2))
        self.assertEqual(encode_jpeg(a.image, n.jpeg_quality),
                         encode_jpeg(b.image, n.jpeg_quality))
        c = render_face(ident, sample_nuisance(stream_rng(5, 1, 1, 3)))
        self.assertFalse(np.array_equal(a.clean, c.clean))

    def test_masks_exact(self):
        for occ in OCCLUSION_TYPES[1:]:
            for ident in self.ids[:3]:
                nuis = sample_nuisance(stream_rng(0, 2, ident.index, 0))
                r = render_face(ident, nuis, occ, stream_rng(0, 3, ident.index))
                vis = r.visibility.astype(bool)
                self.assertEqual(r.occlusion, occ)
                self.assertTrue(vis.any() and (~vis).any(), occ)
                # visible pixels are exactly the unoccluded render
                np.testing.assert_array_equal(r.image[vis], r.clean[vis])
                # covered pixels come from the occluder
                differs = np.any(r.image[~vis] != r.clean[~vis], axis=-1)
                self.assertGreater(differs.mean(), 0.95, occ)

    def test_occluders_cover_the_right_parts(self):
        # (landmark indices that must be covered, that must stay visible)
        expect = {
            'niqab': ([2, 3, 4], [0, 1]),
            'medical_mask': ([2, 3, 4], [0, 1]),
            'sunglasses': ([0, 1], [3, 4]),
            'scarf': ([3, 4], [0, 1]),
        }
        for occ, (covered, visible) in expect.items():
            for ident in self.ids:
                r = render_face(ident, sample_nuisance(stream_rng(1, 2, ident.index)),
                                occ, stream_rng(1, 3, ident.index))
                at = r.visibility[np.round(r.landmarks[:, 1]).astype(int),
                                  np.round(r.landmarks[:, 0]).astype(int)]
                self.assertTrue(np.all(at[covered] == 0), (occ, at))
                self.assertTrue(np.all(at[visible] == 1), (occ, at))
        self.assertEqual(set(OCCLUDERS), set(OCCLUSION_TYPES[1:]))

    def test_clean_has_full_visibility(self):
        r = render_face(self.ids[0], sample_nuisance(stream_rng(0, 1, 0, 0)))
        self.assertTrue(np.all(r.visibility == 1))
        np.testing.assert_array_equal(r.image, r.clean)
        with self.assertRaises(ValueError):
            render_face(self.ids[0], sample_nuisance(stream_rng(0, 1, 0, 0)), 'hat',
                        stream_rng(0))

    def test_visibility_grid_is_block_mean(self):
        mask = np.ones((112, 112), np.uint8)
        mask[:16, :16] = 0
        mask[16:24, 16:32] = 0  # half of block (1, 1)
        grid = visibility_to_grid(mask)
        self.assertEqual(grid.shape, (7, 7))
        self.assertEqual(grid[0, 0], 0.0)
        self.assertAlmostEqual(float(grid[1, 1]), 0.5)
        self.assertEqual(float(grid[6, 6]), 1.0)

    def test_similarity_transform(self):
        ang = np.radians(12)
        rot = 1.3 * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        dst = ARCFACE_TEMPLATE @ rot.T + [4.0, -2.0]
        m = similarity_transform(ARCFACE_TEMPLATE, dst)
        np.testing.assert_allclose(m[:, :2], rot, atol=1e-6)
        np.testing.assert_allclose(m[:, 2], [4.0, -2.0], atol=1e-4)

    def test_post_affine_moves_landmarks(self):
        ident = self.ids[2]
        nuis = sample_nuisance(stream_rng(0, 4, 0))
        base = render_face(ident, nuis)
        post = np.array([[1.5, 0, 20], [0, 1.5, 10]], np.float64)
        big = render_face(ident, nuis, out_size=(200, 190), post_affine=post)
        self.assertEqual(big.image.shape, (200, 190, 3))
        np.testing.assert_allclose(big.landmarks, base.landmarks * 1.5 + [20, 10],
                                   atol=1e-3)
