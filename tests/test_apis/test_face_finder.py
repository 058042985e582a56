"""FaceFinder / prepare_photos: photos in, aligned crops and path reports out."""
import os.path as osp
import tempfile
import unittest

import cv2
import numpy as np
import skimage.data
import torch

from oaml_mm.apis import FaceRecognizer
from oaml_mm.apis.face_finder import (BOX_LANDMARKS, FaceFinder, NoFaceError,
                                      box_landmarks, eye_landmarks,
                                      landmarks_plausible, prepare_photos,
                                      read_photo)
from oaml_mm.datasets.transforms import AlignFace5Points
from oaml_mm.datasets.transforms.align import (ARCFACE_REF_POINTS,
                                               similarity_transform)
from oaml_mm.errors import ConfigError, ImageInputError
from tests.test_apis.helpers import TINY_MODEL
from tests.test_models.test_face_detector import check_face_layout

T = ARCFACE_REF_POINTS


def _apply(M, pts):
    return np.asarray(pts, np.float64) @ M[:, :2].T + M[:, 2]


class TestEyeAndBoxLandmarks(unittest.TestCase):

    def test_eye_landmarks_put_the_eyes_on_the_template(self):
        eyes = np.array([[130.0, 210.0], [171.0, 190.0]])  # rotated, scaled
        pts = eye_landmarks(eyes)
        np.testing.assert_allclose(pts[:2], eyes, atol=1e-3)
        out = AlignFace5Points().transform(
            dict(img=np.zeros((300, 300, 3), np.uint8), landmarks=pts))
        # Aligned, the eyes sit exactly on the template's eye positions.
        M = similarity_transform(pts, T)
        np.testing.assert_allclose(_apply(M, eyes), T[:2], atol=1e-3)
        np.testing.assert_allclose(out['landmarks'], T, atol=1e-3)

    def test_box_landmarks(self):
        pts = box_landmarks((10, 20, 110, 220))
        np.testing.assert_allclose(pts, BOX_LANDMARKS * [100, 200] + [10, 20],
                                   atol=1e-4)
        self.assertLess(pts[0, 0], pts[1, 0])

    def test_plausibility(self):
        ok, why = landmarks_plausible(T)
        self.assertTrue(ok)
        self.assertEqual(why, '')
        moved = T.copy()
        moved[3:, 1] += 0.6 * 35.24  # mouth 0.6 eye distances too low
        ok, why = landmarks_plausible(moved)
        self.assertFalse(ok)
        self.assertIn('mouth corner 0.60', why)
        turned = T.copy()
        turned[2, 0] += 0.3 * 35.24  # nose of a turned head: still a face
        self.assertTrue(landmarks_plausible(turned)[0])
        self.assertFalse(landmarks_plausible(turned, tolerance=0.2)[0])
        flipped = T.copy()
        flipped[2, 1] = 40.0  # nose above the eyes
        self.assertFalse(landmarks_plausible(flipped, tolerance=10)[0])


class TestFaceFinder(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.finder = FaceFinder()
        cls.astro = skimage.data.astronaut()
        cls.tmp = tempfile.TemporaryDirectory()
        d = cls.tmp.name
        cls.files = {
            'astro': osp.join(d, 'astro.jpg'), 'coffee': osp.join(d, 'coffee.jpg'),
            'grey': osp.join(d, 'grey.png'), 'rgba': osp.join(d, 'rgba.png'),
            'empty': osp.join(d, 'empty.jpg'), 'text': osp.join(d, 'text.png')}
        bgr = cls.astro[:, :, ::-1]
        cv2.imwrite(cls.files['astro'], bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(cls.files['coffee'], skimage.data.coffee()[:, :, ::-1])
        cv2.imwrite(cls.files['grey'], cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
        alpha = np.full(bgr.shape[:2], 255, np.uint8)
        cv2.imwrite(cls.files['rgba'], np.dstack([bgr, alpha]))
        open(cls.files['empty'], 'wb').close()
        with open(cls.files['text'], 'w') as f:
            f.write('not an image')

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_astronaut_detected_and_aligned(self):
        crops, reports = prepare_photos(self.files['astro'], finder=self.finder)
        self.assertEqual(tuple(crops.shape), (1, 3, 112, 112))
        self.assertEqual(crops.dtype, torch.uint8)
        rep = reports[0]
        self.assertEqual(rep['path'], 'detected-5pt')
        self.assertEqual(rep['index'], 0)
        self.assertEqual(rep['image'], self.files['astro'])
        self.assertGreater(rep['score'], 0.99)
        pts = np.asarray(rep['landmarks'])
        check_face_layout(self, rep['box'], pts)
        # The crop is AlignFace5Points' warp with the detected points.
        img = read_photo(self.files['astro'])
        ref = AlignFace5Points().transform(dict(img=img, landmarks=pts))['img']
        self.assertTrue(torch.equal(crops[0].permute(1, 2, 0),
                                    torch.from_numpy(ref)))
        # Detected again in its own crop, the face sits on the template.
        again = self.finder.detector.detect(ref)
        self.assertEqual(len(again), 1)
        err = np.linalg.norm(again.landmarks[0] - T, axis=1)
        # Eyes on the template; the broad smile widens the mouth by ~5 px a side.
        self.assertLess(err[:2].max(), 4.0, again.landmarks[0])
        self.assertLess(err.max(), 9.0, again.landmarks[0])

    def test_coffee_no_face(self):
        with self.assertRaises(NoFaceError) as ctx:
            prepare_photos(self.files['coffee'], finder=self.finder)
        self.assertIn(self.files['coffee'], str(ctx.exception))
        self.assertIn('no face found', str(ctx.exception))
        self.assertIsInstance(ctx.exception, ImageInputError)

    def test_given_box_when_detection_fails(self):
        crops, reports = prepare_photos(self.files['coffee'], finder=self.finder,
                                        boxes=[[100, 50, 260, 250]])
        self.assertEqual(reports[0]['path'], 'given-box')
        self.assertIsNone(reports[0]['score'])
        np.testing.assert_allclose(reports[0]['landmarks'],
                                   box_landmarks((100, 50, 260, 250)), atol=1e-4)
        with self.assertRaisesRegex(ImageInputError, 'not inside the 600x400'):
            prepare_photos(self.files['coffee'], finder=self.finder,
                           boxes=[[100, 50, 900, 250]])

    def test_given_box_finds_the_face_inside(self):
        # Detection is skipped for aligned-size inputs only; here the box lets the
        # detector retry inside it: on the astronaut it finds the face there.
        f = FaceFinder(self.finder.detector)
        rep = f.find(self.astro, 'a', box=(170, 50, 280, 185))[0]
        self.assertEqual(rep['path'], 'detected-5pt')  # found before the box
        rep = f._from_box(self.astro, (170, 50, 280, 185), 'a',
                          dict(image='a', score=None, box=None, landmarks=None,
                               note=''))
        self.assertEqual(rep['path'], 'given-box')
        self.assertIn('detected inside the given box', rep['note'])
        self.assertGreater(rep['score'], 0.9)

    def test_eyes_only(self):
        f = FaceFinder(self.finder.detector, align='eyes')
        rep = f.find(self.astro, 'a')[0]
        self.assertEqual(rep['path'], 'detected-eyes')
        pts = np.asarray(rep['landmarks'], np.float32)
        out = AlignFace5Points().transform(dict(img=self.astro, landmarks=pts))
        self.assertFalse(np.array_equal(out['img'], rep['crop']))
        M = similarity_transform(np.asarray(rep['align_points']), T)
        np.testing.assert_allclose(_apply(M, pts[:2]), T[:2], atol=1e-2)

    def test_implausible_points_fall_back_to_the_eyes(self):
        f = FaceFinder(self.finder.detector, tolerance=0.1)
        rep = f.find(self.astro, 'a')[0]
        self.assertEqual(rep['path'], 'detected-eyes')
        self.assertIn('off the template', rep['note'])

    def test_all_faces(self):
        canvas = np.full((512, 900, 3), 128, np.uint8)
        canvas[:, :512] = self.astro
        canvas[100:356, 600:856] = cv2.resize(self.astro, (256, 256),
                                              interpolation=cv2.INTER_AREA)
        crops, reps = prepare_photos(
            canvas, 'rgb', finder=FaceFinder(self.finder.detector, select='all'))
        self.assertEqual(len(reps), 2)
        self.assertEqual([r['index'] for r in reps], [0, 0])
        self.assertLess(reps[0]['box'][2], 512)  # largest first
        crops1, reps1 = prepare_photos(canvas, 'rgb', finder=self.finder)
        self.assertEqual(len(reps1), 1)
        self.assertTrue(torch.equal(crops1[0], crops[0]))

    def test_aligned_input_and_detect_modes(self):
        crop = np.zeros((112, 112, 3), np.uint8)
        _, reps = prepare_photos(crop, 'rgb', finder=self.finder)
        self.assertEqual(reps[0]['path'], 'aligned-input')
        loose = cv2.resize(self.astro[30:210, 135:315], (112, 112),
                           interpolation=cv2.INTER_AREA)
        _, reps = prepare_photos(loose, 'rgb', finder=FaceFinder(
            self.finder.detector, detect='always'))
        self.assertEqual(reps[0]['path'], 'detected-5pt')
        with self.assertRaisesRegex(ImageInputError, 'detection is off'):
            prepare_photos(self.astro, 'rgb', finder=FaceFinder(
                self.finder.detector, detect='never'))

    def test_given_landmarks_skip_detection(self):
        pts = np.array([[205, 102], [247, 104], [225, 129], [202, 139],
                        [245, 142]], np.float32)
        _, reps = prepare_photos(self.astro, 'rgb', landmarks=pts,
                                 finder=self.finder)
        self.assertEqual(reps[0]['path'], 'given-landmarks')
        self.assertIsNone(reps[0]['score'])
        self.assertEqual(reps[0]['note'], '')

    def test_given_landmarks_checked_like_detected_ones(self):
        pts = np.array([[205, 102], [247, 104], [225, 129], [202, 139],
                        [245, 142]], np.float32)
        with self.assertRaisesRegex(ImageInputError, 'read as left and right '
                                    'swapped'):
            prepare_photos(self.astro, 'rgb', landmarks=pts[[1, 0, 2, 4, 3]],
                           finder=self.finder)
        # Implausible in every layout (mouth guessed far too low): aligned
        # with the eyes alone, as a detection would be, and said so.
        low = pts.copy()
        low[3:, 1] += 40
        _, reps = prepare_photos(self.astro, 'rgb', landmarks=low,
                                 finder=self.finder)
        self.assertIn('given landmarks implausible', reps[0]['note'])
        np.testing.assert_allclose(reps[0]['align_points'],
                                   eye_landmarks(low[:2]), atol=1e-4)

    def test_grey_and_rgba_files_and_arrays(self):
        _, ref = prepare_photos(self.files['astro'], finder=self.finder)
        for key in ('grey', 'rgba'):
            _, reps = prepare_photos(self.files[key], finder=self.finder)
            self.assertEqual(reps[0]['path'], 'detected-5pt', key)
            self.assertLess(np.abs(np.subtract(reps[0]['landmarks'],
                                               ref[0]['landmarks'])).max(), 4.0)
        rgba = np.dstack([self.astro, np.full(self.astro.shape[:2], 255,
                                              np.uint8)])
        _, reps = prepare_photos(rgba, 'rgb', finder=self.finder)
        self.assertEqual(reps[0]['path'], 'detected-5pt')
        grey = cv2.cvtColor(self.astro, cv2.COLOR_RGB2GRAY)
        _, reps = prepare_photos(grey, 'rgb', finder=self.finder)
        self.assertEqual(reps[0]['path'], 'detected-5pt')

    def test_bad_files_name_the_file(self):
        for key, msg in (('empty', 'empty \\(0 bytes\\)'),
                         ('text', 'not a readable image')):
            with self.assertRaisesRegex(ImageInputError, msg) as ctx:
                prepare_photos(self.files[key], finder=self.finder)
            self.assertIn(self.files[key], str(ctx.exception))
        with self.assertRaisesRegex(ImageInputError, 'no such image'):
            prepare_photos('/nonexistent/x.jpg', finder=self.finder)
        # Before: "no face found" for a 0x0 array.
        with self.assertRaisesRegex(ImageInputError, 'image 0: empty image'):
            prepare_photos(np.zeros((0, 0, 3), np.uint8), 'rgb',
                           finder=self.finder)
        with self.assertRaisesRegex(
                ImageInputError,
                'a 512x512 image .262144 pixels. is larger than the 1000'):
            read_photo(self.files['astro'], max_pixels=1000)

    def test_huge_dimensions_refused_before_decoding(self):
        # A PNG header claiming 30000x30000 pixels: refused from the header.
        import struct
        import zlib
        path = osp.join(self.tmp.name, 'huge.png')
        ihdr = struct.pack('>IIBBBBB', 30000, 30000, 8, 2, 0, 0, 0)

        def chunk(kind, data):
            return (struct.pack('>I', len(data)) + kind + data +
                    struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
        with open(path, 'wb') as f:
            f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) +
                    chunk(b'IDAT', zlib.compress(b'\x00' * 64)) +
                    chunk(b'IEND', b''))
        with self.assertRaisesRegex(
                ImageInputError,
                'huge.png: a 30000x30000 image .900000000 pixels. is larger '
                'than the 67108864 pixels accepted'):
            read_photo(path)  # before: "more than 178956970 pixels"
        # Between the decoder's bound (2**26) and MAX_PIXELS: the bound that
        # applies is quoted (before: accepted here, then refused by the decoder).
        with open(path, 'wb') as f:
            f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack(
                '>IIBBBBB', 9000, 9000, 8, 2, 0, 0, 0)) + chunk(b'IEND', b''))
        with self.assertRaisesRegex(
                ImageInputError, 'a 9000x9000 image .81000000 pixels. is '
                'larger than the 67108864 pixels accepted'):
            read_photo(path)
        # Under PIL's own bomb limit but over ours: the size is named.
        with open(path, 'wb') as f:
            f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack(
                '>IIBBBBB', 12000, 10000, 8, 2, 0, 0, 0)) + chunk(b'IEND', b''))
        with self.assertRaisesRegex(ImageInputError,
                                    'huge.png: a 12000x10000 image'):
            read_photo(path)

    def test_bad_options(self):
        with self.assertRaisesRegex(ConfigError, 'select must be one of'):
            FaceFinder(select='biggest')
        with self.assertRaisesRegex(ImageInputError, '2 images but 1 boxes'):
            prepare_photos([self.astro, self.astro], 'rgb', boxes=[None],
                           finder=self.finder)

    def test_face_recognizer_takes_photos(self):
        rec = FaceRecognizer(TINY_MODEL)
        rec.face_finder = self.finder
        crops, reps = rec.prepare([self.files['astro'], self.files['grey']],
                                  return_reports=True)
        self.assertEqual(tuple(crops.shape), (2, 3, 112, 112))
        self.assertEqual([r['path'] for r in reps], ['detected-5pt'] * 2)
        feats = rec.extract(self.files['astro'])
        self.assertEqual(tuple(feats['embedding'].shape), (1, 32))
        ref = rec.extract(crops[:1])
        self.assertTrue(torch.allclose(feats['embedding'], ref['embedding']))
        with self.assertRaisesRegex(NoFaceError, 'coffee.jpg: no face found'):
            rec.compare(self.files['astro'], self.files['coffee'])


if __name__ == '__main__':
    unittest.main()
