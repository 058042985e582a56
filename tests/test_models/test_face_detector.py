"""FaceDetector: MTCNN from the weights facenet-pytorch ships, on real photos."""
import unittest

import cv2
import numpy as np
import skimage.data

from oaml_mm.errors import ConfigError, ImageInputError
from oaml_mm.models.detectors import FaceDetector
from oaml_mm.registry import MODELS


def check_face_layout(test: unittest.TestCase, box, pts) -> None:
    """Eyes above nose above mouth, left before right, all inside the box."""
    x1, y1, x2, y2 = box
    test.assertTrue(((pts[:, 0] > x1) & (pts[:, 0] < x2) & (pts[:, 1] > y1) &
                     (pts[:, 1] < y2)).all(), (box, pts))
    test.assertLess(pts[0, 0], pts[1, 0])  # left eye left of right eye
    test.assertLess(pts[3, 0], pts[4, 0])  # mouth corners likewise
    test.assertLess(pts[:2, 1].max(), pts[2, 1])  # eyes above the nose tip
    test.assertLess(pts[2, 1], pts[3:, 1].min())  # nose above the mouth
    test.assertTrue(pts[0, 0] < pts[2, 0] < pts[1, 0])  # nose between the eyes


class TestFaceDetector(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.det = MODELS.build(dict(type='FaceDetector'))

    def test_registered(self):
        self.assertIsInstance(self.det, FaceDetector)

    def test_astronaut_one_face(self):
        faces = self.det.detect(skimage.data.astronaut())
        self.assertEqual(len(faces), 1)
        self.assertEqual(faces.boxes.shape, (1, 4))
        self.assertEqual(faces.landmarks.shape, (1, 5, 2))
        self.assertGreater(faces.scores[0], 0.99)
        box = faces.boxes[0]
        # The face of the 512x512 portrait: upper middle, 60-150 px wide.
        self.assertTrue(150 < box[0] < 230 and 30 < box[1] < 110, box)
        self.assertTrue(60 < box[2] - box[0] < 150, box)
        check_face_layout(self, box, faces.landmarks[0])

    def test_coffee_no_face(self):
        for hard in (False, True):
            faces = self.det.detect(skimage.data.coffee(), hard=hard)
            self.assertEqual(len(faces), 0)
            self.assertEqual(faces.landmarks.shape, (0, 5, 2))

    def test_downscaled_detection_maps_back(self):
        img = skimage.data.astronaut()
        big = cv2.resize(img, (1024, 1024), interpolation=cv2.INTER_CUBIC)
        small = FaceDetector(max_side=512).detect(big)
        ref = self.det.detect(img)
        self.assertEqual(len(small), 1)
        # Detected at 512 px, reported in the 1024 px frame: twice the coordinates.
        np.testing.assert_allclose(small.landmarks[0], 2 * ref.landmarks[0],
                                   atol=4.0)

    def test_largest_first(self):
        img = skimage.data.astronaut()
        canvas = np.full((512, 900, 3), 128, np.uint8)
        canvas[:, :512] = img
        half = cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA)
        canvas[100:356, 600:856] = half
        faces = self.det.detect(canvas)
        self.assertEqual(len(faces), 2)
        area = (faces.boxes[:, 2] - faces.boxes[:, 0]) * \
            (faces.boxes[:, 3] - faces.boxes[:, 1])
        self.assertGreater(area[0], 2.5 * area[1])
        self.assertLess(faces.boxes[0, 2], 512)  # the full-size face first

    def test_bad_thresholds(self):
        with self.assertRaisesRegex(ConfigError, '3 numbers'):
            FaceDetector(thresholds=(0.6, 0.7))

    def test_tiny_image_no_face(self):
        self.assertEqual(len(self.det.detect(np.zeros((8, 8, 3), np.uint8))), 0)

    def test_bad_array(self):
        with self.assertRaisesRegex(ImageInputError, 'RGB uint8'):
            self.det.detect(np.zeros((64, 64), np.uint8))
        with self.assertRaisesRegex(ImageInputError, 'RGB uint8'):
            self.det.detect(np.zeros((64, 64, 3), np.float32))


if __name__ == '__main__':
    unittest.main()
