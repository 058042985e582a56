"""Tests of the feature-damage target (paste_occluders, damage_visibility)."""
import unittest

import torch

from oaml_mm.errors import ConfigError
from oaml_mm.models.functional import damage_visibility, paste_occluders


class TestPasteOccluders(unittest.TestCase):

    def test_composite(self):
        faces = torch.zeros(2, 3, 4, 4)
        occ = torch.full((2, 3, 4, 4), 5.0)
        vis = torch.ones(2, 1, 2, 2)
        vis[0, 0, 1, 0] = 0.0  # lower-left quarter covered
        out = paste_occluders(faces, occ, vis)
        self.assertEqual(out[0, 1].tolist(),
                         [[0., 0., 0., 0.], [0., 0., 0., 0.], [5., 5., 0., 0.],
                          [5., 5., 0., 0.]])
        torch.testing.assert_close(out[1], faces[1])  # all visible: the face
        with self.assertRaises(ConfigError):
            paste_occluders(faces, occ[:1], vis)


class TestDamageVisibility(unittest.TestCase):

    def test_numbers(self):
        # Two channels, three cells: untouched, turned 60 degrees, turned 90.
        clean = torch.tensor([[[[1., 1., 1.]], [[0., 0., 0.]]]])
        c, s = 0.5, 3 ** 0.5 / 2
        occ = torch.tensor([[[[1., c, 0.]], [[0., s, 1.]]]])
        # Damage 1 - cos: 0, 0.5, 1; with scale 1: visibility 1, 0.5, 0.
        out = damage_visibility(clean, occ, scale=1.0)
        self.assertEqual(tuple(out.shape), (1, 1, 1, 3))
        torch.testing.assert_close(out[0, 0, 0], torch.tensor([1., 0.5, 0.]))
        # Scale 0.5: the 60-degree cell reaches total damage too.
        torch.testing.assert_close(
            damage_visibility(clean, occ, scale=0.5)[0, 0, 0],
            torch.tensor([1., 0., 0.]))
        # Scale from the fully covered cells: only the third is covered, its
        # damage (1.0) is total.
        vis = torch.tensor([[[[1., 1., 0.]]]])
        torch.testing.assert_close(
            damage_visibility(clean, occ, vis)[0, 0, 0],
            torch.tensor([1., 0.5, 0.]))
        # The middle one covered: scale 0.5.
        vis = torch.tensor([[[[1., 0., 1.]]]])
        torch.testing.assert_close(
            damage_visibility(clean, occ, vis)[0, 0, 0],
            torch.tensor([1., 0., 0.]))
        # No covered cell: the largest damage (1.0) is the scale.
        torch.testing.assert_close(
            damage_visibility(clean, occ, torch.ones(1, 1, 1, 3))[0, 0, 0],
            torch.tensor([1., 0.5, 0.]))

    def test_nothing_moved_is_all_visible(self):
        maps = torch.randn(2, 4, 3, 3)
        torch.testing.assert_close(damage_visibility(maps, maps.clone()),
                                   torch.ones(2, 1, 3, 3))

    def test_errors(self):
        with self.assertRaises(ConfigError):
            damage_visibility(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 4))
        with self.assertRaises(ConfigError):
            damage_visibility(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3),
                              scale=0.0)


if __name__ == '__main__':
    unittest.main()
