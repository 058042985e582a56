"""Drawing helpers: correspondences, overlays, the comparison picture."""
import unittest

import numpy as np
import torch

from oaml_mm.visualization import (draw_face_pair, draw_visibility_grid,
                                   render_comparison,
                                   strongest_correspondences,
                                   visibility_overlay)


class TestVisualization(unittest.TestCase):

    def test_correspondences_are_mutual_best_and_weighted(self):
        # Cells of b are those of a in reverse order.
        a = torch.eye(9).reshape(9, 3, 3)
        b = a.reshape(9, 9).flip(1).reshape(9, 3, 3)
        pairs = strongest_correspondences(a, b, k=20)
        self.assertEqual(sorted((r, t) for r, t, _ in pairs),
                         [(r, 8 - r) for r in range(9)])
        vis = torch.ones(1, 3, 3)
        vis[0, 0, 0] = 0.5
        pairs = strongest_correspondences(a, b, vis, None, k=3)
        self.assertEqual(len(pairs), 3)
        self.assertNotIn(0, [r for r, _, _ in pairs])  # down-weighted cell last
        self.assertAlmostEqual(pairs[0][2], 1.0)

    def test_overlay_colours(self):
        img = np.full((70, 70, 3), 100, np.uint8)
        vis = np.ones((7, 7), np.float32)
        vis[3:] = 0.0
        out = visibility_overlay(img, vis, alpha=0.5, grid=False)
        top, bottom = out[5, 5], out[65, 5]
        self.assertGreater(int(top[1]), int(top[0]))       # visible: green
        self.assertGreater(int(bottom[0]), int(bottom[1]))  # occluded: red

    def test_pictures(self):
        img = np.full((112, 112, 3), 128, np.uint8)
        vis = np.ones((7, 7), np.float32)
        pic = draw_face_pair(img, img, vis, vis, [(0, 48, 0.9), (10, 10, 0.5)],
                             ['SAME', 'scores'], decision=True)
        self.assertEqual(pic.shape[1], 2 * 336 + 90 + 40)
        self.assertEqual(pic.dtype, np.uint8)
        grid = draw_visibility_grid(np.stack([img] * 3), np.stack([vis] * 3), ncol=2)
        self.assertEqual(grid.shape, (224, 224, 3))
        feats = dict(visibility=torch.ones(1, 1, 7, 7),
                     feature_map=torch.randn(1, 16, 7, 7))
        res = dict(scores={'adaface': 0.5, 'fused': 2.0}, branch='fused',
                   threshold=1.0, same=True)
        pic2 = render_comparison(img, img, res, feats, feats, lines=5)
        self.assertEqual(pic2.shape[1], pic.shape[1])  # 3 header lines vs 2


if __name__ == '__main__':
    unittest.main()
