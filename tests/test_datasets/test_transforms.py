"""Face transforms: packing, flip, alignment, occlusion masks and the augmenter."""
import unittest

import numpy as np
import torch

from oaml_mm.datasets.transforms import (ARCFACE_REF_POINTS, AlignFace5Points,
                                         FaceAugmenter, FaceRandomFlip,
                                         MedicalMaskOcclusion, PackFaceInputs,
                                         draw_medical_mask_template,
                                         similarity_transform,
                                         visibility_to_grid)
from oaml_mm.errors import DataFormatError
from oaml_mm.registry import TRANSFORMS
from .helpers import make_face


class TestPackFaceInputs(unittest.TestCase):

    def test_pack(self):
        img = make_face(3, size=112)
        mask = np.ones((112, 112), np.float32)
        mask[56:, :] = 0
        out = PackFaceInputs()(dict(img=img, gt_label=3, visibility_mask=mask,
                                    key=5, pair_index=2, flip=True))
        self.assertEqual(out['inputs'].dtype, torch.uint8)
        self.assertEqual(tuple(out['inputs'].shape), (3, 112, 112))
        self.assertTrue(torch.equal(out['inputs'][0], torch.from_numpy(img[..., 0])))
        ds = out['data_samples']
        self.assertEqual(int(ds.gt_label), 3)
        vis = ds.gt_visibility
        self.assertEqual(tuple(vis.shape), (1, 7, 7))
        self.assertTrue(torch.allclose(vis[0, :, 0],
                                       torch.tensor([1, 1, 1, .5, 0, 0, 0.])))
        self.assertEqual(ds.key, 5)
        self.assertEqual(ds.pair_index, 2)
        clean = PackFaceInputs()(dict(img=img))['data_samples']
        self.assertTrue(torch.equal(clean.gt_visibility, torch.ones(1, 7, 7)))
        self.assertNotIn('gt_visibility',
                         PackFaceInputs(default_visibility=None)(
                             dict(img=img))['data_samples'])

    def test_grid_area_average(self):
        m = np.zeros((14, 14), np.float32)
        m[0, 0] = 1
        self.assertAlmostEqual(float(visibility_to_grid(m)[0, 0]), 0.25)


class TestFlipAlign(unittest.TestCase):

    def test_flip_moves_mask_and_landmarks(self):
        img = np.zeros((8, 8, 3), np.uint8)
        img[:, :2] = 255
        mask = np.ones((8, 8), np.float32)
        mask[:, :2] = 0
        lmk = np.array([[1, 1], [6, 1], [3, 4], [2, 6], [5, 6]], np.float32)
        out = FaceRandomFlip(prob=1.0)(dict(img=img, visibility_mask=mask,
                                            landmarks=lmk))
        self.assertTrue(out['flip'])
        self.assertTrue((out['img'][:, 6:] == 255).all())
        self.assertTrue((out['visibility_mask'][:, 6:] == 0).all())
        self.assertTrue((out['visibility_mask'][:, :6] == 1).all())
        np.testing.assert_allclose(out['landmarks'][0], [1, 1])  # new left eye
        np.testing.assert_allclose(out['landmarks'][2], [4, 4])
        self.assertFalse(FaceRandomFlip(prob=0.0)(dict(img=img))['flip'])

    def test_similarity_transform_recovers(self):
        theta = np.deg2rad(20)
        R = 1.7 * np.array([[np.cos(theta), -np.sin(theta)],
                            [np.sin(theta), np.cos(theta)]])
        src = ARCFACE_REF_POINTS.astype(np.float64)
        dst = src @ R.T + [4, -3]
        M = similarity_transform(src, dst)
        np.testing.assert_allclose(M[:, :2], R, atol=1e-6)
        np.testing.assert_allclose(M[:, 2], [4, -3], atol=1e-5)

    def test_align(self):
        # a 200x200 image with the template scaled x2 and shifted
        lmk = ARCFACE_REF_POINTS * 2 + 10
        img = np.zeros((200, 200, 3), np.uint8)
        for x, y in lmk.astype(int):
            img[y - 2:y + 3, x - 2:x + 3] = 255
        out = AlignFace5Points()(dict(img=img, landmarks=lmk))
        self.assertEqual(out['img'].shape, (112, 112, 3))
        np.testing.assert_allclose(out['landmarks'], ARCFACE_REF_POINTS,
                                   atol=1e-3)
        x, y = ARCFACE_REF_POINTS[2].round().astype(int)
        self.assertGreater(out['img'][y, x].mean(), 100)
        with self.assertRaisesRegex(DataFormatError, 'landmarks'):
            AlignFace5Points()(dict(img=img, landmarks=np.zeros((4, 2)),
                                    img_path='a.jpg'))

    def test_landmark_layout_mistake_named(self):
        from oaml_mm.datasets.transforms import landmark_layout_mistake
        T = ARCFACE_REF_POINTS * 3 + [200, 150]  # a face in a big photo
        self.assertEqual(landmark_layout_mistake(T), '')
        flat = T.reshape(-1)
        cases = {
            'all x then all y': np.concatenate([T[:, 0], T[:, 1]]),
            '(y, x) pairs': T[:, ::-1],
            'left and right swapped (eyes and mouth': T[[1, 0, 2, 4, 3]],
            'the two eyes swapped': T[[1, 0, 2, 3, 4]],
            'the two mouth corners swapped': T[[0, 1, 2, 4, 3]]}
        for mistake, given in cases.items():
            self.assertIn(mistake, landmark_layout_mistake(
                np.asarray(given).reshape(5, 2)))
        self.assertEqual(flat.size, 10)
        # Implausible in every layout (a detector's guess under a niqab): no
        # layout is blamed.
        guess = T.copy()
        guess[2:, 1] += 60
        self.assertEqual(landmark_layout_mistake(guess), '')


class TestOcclusion(unittest.TestCase):

    def test_template(self):
        t = draw_medical_mask_template(120, 84)
        self.assertEqual(t.shape, (84, 120, 4))
        self.assertEqual(t[0, 0, 3], 0)  # corner above the cheek is clear
        self.assertEqual(t[40, 60, 3], 255)

    def test_template_alpha_01_and_bad_template(self):
        # A 0/1 alpha once pasted a 1/255-opaque mask and kept the face visible.
        import os.path as osp
        import tempfile

        import cv2
        t = draw_medical_mask_template(120, 84)
        with tempfile.TemporaryDirectory() as tmp:
            path = osp.join(tmp, 'm.png')
            t01 = t.copy()
            t01[..., 3] //= 255
            cv2.imwrite(path, cv2.cvtColor(t01, cv2.COLOR_RGBA2BGRA))
            occ = TRANSFORMS.build(dict(type='MedicalMaskOcclusion', prob=1.0,
                                        template=path))
            np.testing.assert_array_equal(occ.template[..., 3],
                                          t01[..., 3].astype(np.uint8) * 255)
            self.assertEqual(occ.template[40, 60, 3], 255)
            from tests.test_datasets.helpers import huge_header_png
            with open(path, 'wb') as f:
                f.write(huge_header_png())
            occ = TRANSFORMS.build(dict(type='MedicalMaskOcclusion', prob=1.0,
                                        template=path))
            with self.assertRaisesRegex(DataFormatError, 'm.png.*RGBA PNG'):
                occ.template

    def test_medical_mask_visibility_matches_pixels(self):
        np.random.seed(0)
        img = np.full((112, 112, 3), 7, np.uint8)
        out = TRANSFORMS.build(dict(type='MedicalMaskOcclusion', prob=1.0))(
            dict(img=img.copy()))
        vis = out['visibility_mask']
        changed = (out['img'] != 7).any(-1)
        self.assertTrue(((vis < 0.5) <= changed).all() or
                        (changed[vis < 0.5]).mean() > 0.99)
        self.assertTrue((vis[changed] < 1).all())
        # mouth covered, eyes visible
        mx, my = ARCFACE_REF_POINTS[3:].mean(0).astype(int)
        self.assertLess(vis[my, mx], 0.05)
        for ex, ey in ARCFACE_REF_POINTS[:2].astype(int):
            self.assertGreater(vis[ey, ex], 0.95)
        self.assertEqual(out['occlusion_type'], 'medical_mask')
        grid = visibility_to_grid(vis)
        self.assertLess(grid[5, 3], 0.1)
        self.assertGreater(grid[0, 3], 0.9)

    def test_medical_mask_probability_and_multiplies(self):
        np.random.seed(1)
        t = MedicalMaskOcclusion(prob=0.5)
        hits = sum('visibility_mask' in t(dict(img=np.zeros((112, 112, 3),
                                                            np.uint8)))
                   for _ in range(200))
        self.assertTrue(70 < hits < 130, hits)
        prior = np.ones((112, 112), np.float32)
        prior[:10] = 0
        out = MedicalMaskOcclusion(prob=1.0)(
            dict(img=np.zeros((112, 112, 3), np.uint8), visibility_mask=prior))
        self.assertTrue((out['visibility_mask'][:10] == 0).all())


class TestFaceAugmenter(unittest.TestCase):

    def test_off_is_identity(self):
        img = make_face(1, size=32)
        out = FaceAugmenter(0, 0, 0)(dict(img=img.copy()))
        np.testing.assert_array_equal(out['img'], img)

    def test_crop_zero_canvas_and_mask(self):
        np.random.seed(0)
        img = np.full((32, 32, 3), 200, np.uint8)
        out = FaceAugmenter(1.0, 0, 0, crop_hides=True)(dict(img=img.copy()))
        zero = (out['img'] == 0).all(-1)
        np.testing.assert_array_equal(zero, out['visibility_mask'] == 0)
        self.assertTrue(0 < out['crop_ratio'] <= 1)

    def test_low_res_and_photometric_change_pixels(self):
        np.random.seed(0)
        img = make_face(2, size=32)
        lr = FaceAugmenter(0, 1.0, 0, low_res_range=(0.2, 0.3))(
            dict(img=img.copy()))
        self.assertEqual(lr['img'].shape, img.shape)
        self.assertGreater(np.abs(lr['img'].astype(int) - img).mean(), 1)
        ph = FaceAugmenter(0, 0, 1.0)(dict(img=img.copy()))
        self.assertGreater(np.abs(ph['img'].astype(int) - img).mean(), 0.5)
        self.assertNotIn('visibility_mask', ph)


if __name__ == '__main__':
    unittest.main()
