"""draw_detections (visualization) and oaml_mm.apis.photos (side files, report
lines)."""
import os.path as osp
import tempfile
import unittest

import numpy as np
import torch

from oaml_mm.apis.photos import (format_hits, format_reports, format_verdict,
                                 read_boxes, read_landmarks,
                                 search_photo_faces)
from oaml_mm.errors import ImageInputError
from oaml_mm.visualization import draw_detections, stack_pictures


class TestDrawDetections(unittest.TestCase):

    def test_layout_box_points_and_visibility(self):
        photo = np.full((200, 300, 3), 100, np.uint8)
        rep = dict(path='detected-5pt', score=0.98, box=[50, 40, 150, 160],
                   landmarks=[[80, 80], [120, 80], [100, 100], [85, 130],
                              [115, 130]], note='')
        crops = np.full((1, 112, 112, 3), 200, np.uint8)
        vis = np.zeros((1, 1, 7, 7), np.float32)  # all predicted occluded
        pic = draw_detections(photo, [rep], crops, vis, height=200, title='p')
        head = 30 + 22
        self.assertEqual(pic.shape, (head + 200 + 12, 12 + 300 + 12 + 200 + 12,
                                     3))
        # The box's left edge (yellow) at x = 50 in the photo.
        edge = pic[head + 100, 12 + 50].astype(int)  # anti-aliased: near it
        self.assertTrue(edge[0] > 200 and edge[1] > 170 and edge[2] < 60, edge)
        np.testing.assert_array_equal(pic[head + 100, 12 + 60], [100] * 3)
        # Left-eye dot (blue) at (80, 80).
        np.testing.assert_array_equal(pic[head + 80, 12 + 80], [40, 120, 255])
        # The crop is tinted red where the visibility is 0.
        tile = pic[head + 50, 12 + 300 + 12 + 20].astype(int)
        self.assertGreater(tile[0], tile[1] + 40)

    def test_stack(self):
        a = np.zeros((10, 20, 3), np.uint8)
        b = np.zeros((5, 30, 3), np.uint8)
        self.assertEqual(stack_pictures([a, b], gap=2).shape, (17, 30, 3))


class TestPhotoOptions(unittest.TestCase):

    def test_boxes_file(self):
        with tempfile.TemporaryDirectory() as d:
            path = osp.join(d, 'b.txt')
            with open(path, 'w') as f:
                f.write('1 2 30 40\n-\n')
            self.assertEqual(read_boxes(path, 2), [[1.0, 2.0, 30.0, 40.0], None])
            with self.assertRaisesRegex(ImageInputError, 'expected 3 line'):
                read_boxes(path, 3)
            with open(path, 'w') as f:
                f.write('1 2 x 4\n')
            with self.assertRaisesRegex(ImageInputError,
                                        'b.txt, line 1: expected 4 numbers'):
                read_boxes(path, 1)

    def test_landmarks_file(self):
        with tempfile.TemporaryDirectory() as d:
            path = osp.join(d, 'l.txt')
            with open(path, 'w') as f:
                f.write(' '.join(str(v) for v in range(10)) + '\n')
            (pts, ) = read_landmarks(path, 1)
            np.testing.assert_array_equal(pts, np.arange(10.).reshape(5, 2))
            self.assertIsNone(read_landmarks(None, 1))
            with self.assertRaisesRegex(ImageInputError,
                                        r'l.txt: expected 2 line\(s\) of 10'):
                read_landmarks(path, 2)

    def test_files_with_byte_order_mark(self):
        # A Windows editor's mark once made the first number unreadable: the
        # whole --landmarks / --boxes file was refused.
        with tempfile.TemporaryDirectory() as d:
            lmk, box = osp.join(d, 'l.txt'), osp.join(d, 'b.txt')
            with open(lmk, 'w', encoding='utf-8-sig') as f:
                f.write(' '.join(str(v) for v in range(10)) + '\n')
            with open(box, 'w', encoding='utf-8-sig') as f:
                f.write('1 2 30 40\n-\n')
            (pts, ) = read_landmarks(lmk, 1)
            np.testing.assert_array_equal(pts, np.arange(10.).reshape(5, 2))
            self.assertEqual(read_boxes(box, 2), [[1.0, 2.0, 30.0, 40.0], None])

    def test_report_lines(self):
        reps = [dict(image='/x/a.jpg', path='aligned-input', score=None),
                dict(image='/x/b.jpg', path='detected-eyes', score=0.91234,
                     note='nose off')]
        self.assertEqual(format_reports(reps),
                         'face: b.jpg: detected-eyes, detector score 0.912 '
                         '(nose off)')
        self.assertEqual(format_reports(reps[:1]), '')

    def test_verdict_and_hits(self):
        res = dict(scores=dict(adaface=0.5, fused=1.25), same=True,
                   branch='fused', unit='z-score', threshold=1.0,
                   threshold_source='calibrated')
        self.assertEqual(format_verdict(res),
                         'adaface 0.5000  fused 1.2500\nSAME person (fused '
                         '1.2500 >= threshold 1.0000, z-score; threshold '
                         'calibrated)')
        res.update(same=None)
        self.assertIn('decision unknown: no threshold for the fused branch',
                      format_verdict(res))
        # FaceGallery.search's hits carry the decision of the ranking branch.
        hit = dict(name='al', score=0.75, adaface=0.5, branch='fused',
                   unit='z-score', threshold=None, threshold_source=None,
                   same=None)
        self.assertEqual(format_hits([hit]), [
            ' 1. al                       score 0.7500  no threshold  '
            '(adaface 0.5000)',
            '    decision unknown: no threshold for the fused branch (the '
            'checkpoint is not calibrated): the nearest names are not matches'])
        hit.update(same=False, threshold=1.0, threshold_source='calibrated')
        self.assertEqual(format_hits([hit]), [
            ' 1. al                       score 0.7500  different (fused < '
            '1.0000)  (adaface 0.5000)',
            '    threshold calibrated (z-score)'])
        self.assertEqual(format_hits([]), [])

    def test_search_photo_faces(self):
        hit = dict(name='al', score=0.75, adaface=0.75, branch='adaface',
                   unit='cosine', threshold=0.5, threshold_source='calibrated',
                   same=True)

        class Gallery:
            calls = []

            def search(self, crop, top_k, rerank, rerank_k):
                self.calls.append((int(crop[0, 0, 0]), top_k, rerank,
                                   rerank_k))
                return [dict(hit, score=float(crop[0, 0, 0]) / 100)]

        crops = torch.from_numpy(np.stack(
            [np.full((3, 4, 4), v, np.uint8) for v in (75, 60)]))
        reps = [dict(image='/x/p.jpg', path='detected-5pt', score=0.9),
                dict(image='/x/p.jpg', path='detected-eyes', score=0.8)]
        gallery = Gallery()
        # One face of the largest: the hit list alone, as before photos.
        result, text = search_photo_faces(gallery, crops[:1], reps[:1], 3,
                                          False, 7)
        self.assertEqual(Gallery.calls, [(75, 3, False, 7)])
        self.assertEqual(result, [dict(hit, score=0.75)])
        self.assertEqual(text.splitlines(), [
            'face: p.jpg: detected-5pt, detector score 0.900',
            *format_hits(result)])
        # All faces: one entry per face, each headed in the text.
        result, text = search_photo_faces(gallery, crops, reps, faces='all')
        self.assertEqual([r['face'] for r in result], reps)
        self.assertEqual([r['hits'][0]['score'] for r in result], [0.75, 0.6])
        self.assertEqual(Gallery.calls[1:], [(75, 5, True, 20),
                                             (60, 5, True, 20)])
        lines = text.splitlines()
        self.assertEqual(lines[2], 'face 0:')
        self.assertEqual(lines[5], 'face 1:')
        self.assertEqual(len(lines), 8)
        # One face found with --faces all still gives the per-face form.
        result, _ = search_photo_faces(gallery, crops[:1], reps[:1],
                                       faces='all')
        self.assertEqual(result[0]['face'], reps[0])


if __name__ == '__main__':
    unittest.main()
