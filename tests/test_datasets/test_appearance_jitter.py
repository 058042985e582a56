"""AppearanceJitter: the image changes, the visibility mask does not; arguments."""
import unittest

import cv2
import numpy as np

from oaml_mm.datasets.transforms import AppearanceJitter
from oaml_mm.errors import ConfigError
from oaml_mm.registry import TRANSFORMS


def _face(h=112, w=112):
    """A smooth image (a blurred circle) so that every operation shows."""
    img = np.full((h, w, 3), 90, np.uint8)
    img[30:80, 30:80] = (200, 150, 120)
    return img


class TestAppearanceJitter(unittest.TestCase):

    def test_changes_image_keeps_mask(self):
        t = TRANSFORMS.build(dict(type='AppearanceJitter', prob=1.0,
                                  op_prob=1.0))
        mask = np.ones((112, 112), np.float32)
        mask[60:] = 0.25
        for seed in range(10):
            np.random.seed(seed)
            out = t(dict(img=_face(), visibility_mask=mask.copy(), gt_label=3))
            self.assertEqual(out['img'].dtype, np.uint8)
            self.assertEqual(out['img'].shape, (112, 112, 3))
            self.assertGreater(np.abs(out['img'].astype(int) - _face()).mean(),
                               1.0, seed)
            np.testing.assert_array_equal(out['visibility_mask'], mask)
            self.assertEqual(out['gt_label'], 3)

    def test_each_operation_alone_changes_the_image(self):
        # op_prob 1 with every other operation switched off by its strength.
        for kw in (dict(colour=0.4), dict(gamma=0.6), dict(contrast=0.5),
                   dict(lighting=0.6), dict(blur_sigma=2.0),
                   dict(noise_std=12.0), dict(recolour=True)):
            base = dict(colour=0.0, gamma=0.0, contrast=0.0, lighting=0.0,
                        blur_sigma=0.3, noise_std=0.0, recolour=False)
            t = AppearanceJitter(prob=1.0, op_prob=1.0, **{**base, **kw})
            diffs = []
            for seed in range(5):
                np.random.seed(seed)
                diffs.append(np.abs(t(dict(img=_face()))['img'].astype(int)
                                    - _face()).max())
            self.assertGreater(max(diffs), 3, kw)
        # All strengths off: the image comes back (up to the tiniest blur).
        off = AppearanceJitter(prob=1.0, op_prob=1.0, colour=0.0, gamma=0.0,
                               contrast=0.0, lighting=0.0, blur_sigma=0.3,
                               noise_std=0.0, recolour=False)
        np.random.seed(0)
        self.assertLessEqual(
            np.abs(off(dict(img=_face()))['img'].astype(int) - _face()).max(),
            3)

    def test_prob_zero_is_identity_and_grey_stays_grey(self):
        img = _face()
        out = AppearanceJitter(prob=0.0)(dict(img=img.copy()))
        np.testing.assert_array_equal(out['img'], img)
        np.random.seed(0)
        grey = AppearanceJitter(prob=1.0, op_prob=1.0)(
            dict(img=img[..., 0].copy()))['img']
        self.assertEqual(grey.shape, (112, 112))

    def test_same_seed_same_output(self):
        t = AppearanceJitter(prob=1.0, op_prob=0.7)
        np.random.seed(5)
        a = t(dict(img=_face()))['img']
        np.random.seed(5)
        b = t(dict(img=_face()))['img']
        np.testing.assert_array_equal(a, b)

    def _only(self, **kw):
        """Every older operation switched off, op_prob 1."""
        return AppearanceJitter(prob=1.0, op_prob=1.0, colour=0.0, gamma=0.0,
                                contrast=0.0, lighting=0.0, blur_sigma=0.3,
                                noise_std=0.0, recolour=False, **kw)

    def test_grey_low_res_and_jpeg(self):
        img = _face()
        np.random.seed(0)
        grey = self._only(grey_prob=1.0)(dict(img=img.copy()))['img']
        self.assertEqual(grey.shape, (112, 112, 3))
        np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
        self.assertLess(np.abs(grey[40, 40].astype(int) - 160).max(), 5)
        # A one-pixel checkerboard is gone after a quarter-resolution round trip.
        board = np.zeros((112, 112, 3), np.uint8)
        board[::2, ::2] = board[1::2, 1::2] = 255
        np.random.seed(0)
        small = self._only(low_res_range=(0.25, 0.25))(
            dict(img=board.copy()))['img']
        self.assertLess(small.astype(float).std(), 30)
        self.assertGreater(board.astype(float).std(), 120)
        # Quality fixed at 20: exactly OpenCV's JPEG round trip of the image.
        np.random.seed(0)
        jpg = self._only(jpeg_quality=(20, 20))(dict(img=img.copy()))['img']
        ok, buf = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, 20])
        np.testing.assert_array_equal(jpg, cv2.imdecode(buf, cv2.IMREAD_COLOR))
        self.assertFalse(np.array_equal(jpg, img))

    def test_new_operations_off_draw_nothing(self):
        # Off by default: a config without them gets the same images as before
        # (the random stream is not consumed by the new operations).
        a = AppearanceJitter(prob=1.0, op_prob=0.7)
        b = AppearanceJitter(prob=1.0, op_prob=0.7, grey_prob=0.0)
        np.random.seed(3)
        a(dict(img=_face()))
        after_a = np.random.rand()
        np.random.seed(3)
        b(dict(img=_face()))
        self.assertEqual(np.random.rand(), after_a)
        np.random.seed(3)
        AppearanceJitter(prob=1.0, op_prob=0.7, jpeg_quality=(50, 90))(
            dict(img=_face()))
        self.assertNotEqual(np.random.rand(), after_a)

    def test_bad_arguments(self):
        for kw in (dict(prob=1.5), dict(op_prob=-0.1), dict(colour=1.0),
                   dict(blur_sigma=0.1), dict(noise_std=-1), dict(gamma=True),
                   dict(grey_prob=2.0), dict(low_res_range=(0.0, 0.5)),
                   dict(low_res_range=(0.6, 0.5)), dict(low_res_range=0.5),
                   dict(jpeg_quality=(0, 90)), dict(jpeg_quality=(30.5, 90)),
                   dict(jpeg_quality=(30, 101))):
            with self.assertRaisesRegex(ConfigError, 'AppearanceJitter'):
                AppearanceJitter(**kw)


if __name__ == '__main__':
    unittest.main()
