"""prepare_faces / load_image: every input kind, alignment and bad input."""
import os.path as osp
import tempfile
import unittest

import cv2
import numpy as np
import torch

from oaml_mm.apis import prepare_faces
from oaml_mm.datasets.transforms import ARCFACE_REF_POINTS, AlignFace5Points
from oaml_mm.errors import ImageInputError
from tests.test_apis.helpers import face, write_face


class TestPrepareFaces(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def test_path_array_tensor_agree(self):
        rgb = face(1)
        path = osp.join(self.tmp.name, 'a.png')  # lossless
        cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        from_path = prepare_faces(path)
        from_rgb = prepare_faces(rgb, channel_order='rgb')
        from_bgr = prepare_faces(rgb[:, :, ::-1].copy(), channel_order='bgr')
        from_tensor = prepare_faces(torch.from_numpy(rgb).permute(2, 0, 1))
        self.assertEqual(from_path.shape, (1, 3, 112, 112))
        self.assertEqual(from_path.dtype, torch.uint8)
        for other in (from_rgb, from_bgr, from_tensor):
            self.assertTrue(torch.equal(from_path, other))
        # Channel 0 is red.
        self.assertTrue(torch.equal(from_rgb[0, 0], torch.from_numpy(rgb[:, :, 0])))
        batch = prepare_faces(torch.stack([from_rgb[0], from_rgb[0]]))
        self.assertEqual(batch.shape[0], 2)

    def test_array_needs_channel_order(self):
        with self.assertRaisesRegex(ImageInputError, 'channel_order'):
            prepare_faces(face(0))

    def test_grayscale_and_float(self):
        gray = face(0)[:, :, 0]
        out = prepare_faces(gray, channel_order='rgb')
        self.assertTrue(torch.equal(out[0, 0], out[0, 2]))
        f = prepare_faces(face(0).astype(np.float32), channel_order='rgb')
        self.assertTrue(torch.equal(f, prepare_faces(face(0), channel_order='rgb')))

    def test_float_range_0_to_1_and_normalised_refused(self):
        rgb = face(0)
        unit = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
        # Before: rounded to an almost black 0/1 image and embedded silently.
        for img, kw in ((unit, {}), (unit[None], {}),
                        (rgb.astype(np.float64) / 255, dict(channel_order='rgb'))):
            with self.assertRaisesRegex(ImageInputError,
                                        r'lies in \[0, 1\].*multiply by 255'):
                prepare_faces(img, **kw)
        with self.assertRaisesRegex(ImageInputError,
                                    r'span \[-1, 1\]; expected 0\.\.255'):
            prepare_faces(unit * 2 - 1)
        with self.assertRaisesRegex(ImageInputError, r'span \[0, 510\]'):
            prepare_faces(torch.from_numpy(rgb.astype(np.int32) * 2).permute(
                2, 0, 1))
        with self.assertRaisesRegex(ImageInputError, 'finite'):
            prepare_faces(torch.full((3, 112, 112), float('nan')))
        # The same pixels in 0..255 as floats equal the uint8 crop.
        self.assertTrue(torch.equal(prepare_faces(unit * 255),
                                    prepare_faces(torch.from_numpy(rgb).permute(
                                        2, 0, 1))))

    def test_missing_and_unreadable_file(self):
        with self.assertRaisesRegex(ImageInputError, 'no such image'):
            prepare_faces(osp.join(self.tmp.name, 'nope.jpg'))
        bad = osp.join(self.tmp.name, 'bad.jpg')
        with open(bad, 'wb') as f:
            f.write(b'not an image at all')
        with self.assertRaisesRegex(ImageInputError, 'bad.jpg: not a readable'):
            prepare_faces(bad)
        # 70 bytes claiming 65535 x 65535 pixels: once a bare cv2.error.
        from tests.test_datasets.helpers import huge_header_png
        with open(bad, 'wb') as f:
            f.write(huge_header_png())
        with self.assertRaisesRegex(ImageInputError,
                                    'bad.jpg: not a readable.*header claims'):
            prepare_faces(bad)

    def test_unaligned_needs_landmarks(self):
        path = write_face(self.tmp.name, 'big.jpg', 3)
        img = cv2.resize(cv2.imread(path), (200, 150))
        with self.assertRaisesRegex(ImageInputError, '200x150 image is not an '
                                    'aligned 112x112'):
            prepare_faces(img, channel_order='bgr')

    def test_alignment_is_the_data_layer_one(self):
        rng = np.random.default_rng(0)
        img = rng.integers(0, 256, (160, 200, 3)).astype(np.uint8)
        pts = ARCFACE_REF_POINTS * 1.3 + np.array([20, 5], np.float32)
        out = prepare_faces(img, channel_order='rgb', landmarks=pts)
        ref = AlignFace5Points().transform(dict(img=img, landmarks=pts))['img']
        self.assertTrue(torch.equal(out[0].permute(1, 2, 0),
                                    torch.from_numpy(ref)))
        # Per-image landmark lists with None for aligned crops.
        two = prepare_faces([img, face(1)], channel_order='rgb',
                            landmarks=[pts, None])
        self.assertTrue(torch.equal(two[0], out[0]))

    def test_bad_landmarks(self):
        img = np.zeros((100, 120, 3), np.uint8)
        pts = ARCFACE_REF_POINTS.copy()
        pts[4, 0] = 130.0
        with self.assertRaisesRegex(ImageInputError,
                                    'landmark 4 at \\(130.0, .*outside the '
                                    '120x100 image'):
            prepare_faces(img, channel_order='rgb', landmarks=pts)
        with self.assertRaisesRegex(ImageInputError, '5 finite'):
            prepare_faces(img, channel_order='rgb', landmarks=pts[:4])
        with self.assertRaisesRegex(ImageInputError, '2 images but 1 landmark'):
            prepare_faces([img, img], channel_order='rgb', landmarks=[pts])

    def test_landmark_layout_mistakes_refused(self):
        # All-x-then-all-y and left/right-swapped points once made a garbage
        # crop that still got a confident score.
        img = np.zeros((160, 200, 3), np.uint8)
        pts = ARCFACE_REF_POINTS * 1.3 + np.array([20, 5], np.float32)
        xy = np.concatenate([pts[:, 0], pts[:, 1]]).reshape(5, 2)
        with self.assertRaisesRegex(ImageInputError,
                                    'image 0: the 5 landmarks .* do not look '
                                    'like a face .* read as all x then all y'):
            prepare_faces(img, channel_order='rgb', landmarks=xy)
        with self.assertRaisesRegex(ImageInputError,
                                    'read as the two eyes swapped; expected '
                                    r'\(x, y\) pairs .*left eye, right eye'):
            prepare_faces(img, channel_order='rgb',
                          landmarks=pts[[1, 0, 2, 3, 4]])

    def test_degenerate_landmarks(self):
        img = face(0)
        pts = np.tile(ARCFACE_REF_POINTS[:1], (5, 1))  # five copies of one point
        with self.assertRaisesRegex(ImageInputError,
                                    'degenerate landmarks .spread 0.00 px'):
            prepare_faces(img, channel_order='rgb', landmarks=pts)
        pts = ARCFACE_REF_POINTS.copy()
        pts[1] = pts[0] + 0.5  # eyes half a pixel apart
        with self.assertRaisesRegex(ImageInputError, 'eyes 0.71 px apart'):
            prepare_faces(img, channel_order='rgb', landmarks=pts)

    def test_bool_and_empty_images_named_as_such(self):
        with self.assertRaisesRegex(ImageInputError,
                                    'image 0: dtype bool is not an image'):
            prepare_faces(torch.ones(3, 112, 112, dtype=torch.bool))
        with self.assertRaisesRegex(ImageInputError, 'dtype bool is not an'):
            prepare_faces(np.ones((112, 112, 3), bool), channel_order='rgb')
        for shape in ((0, 0), (0, 0, 3), (5, 0, 3)):
            with self.subTest(shape=shape), self.assertRaisesRegex(
                    ImageInputError, 'image 0: empty image'):
                prepare_faces(np.zeros(shape, np.uint8), channel_order='rgb')


if __name__ == '__main__':
    unittest.main()
