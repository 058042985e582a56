"""draw_detections (visualization) and the photo options of tools/infer.py."""
import argparse
import os.path as osp
import tempfile
import unittest

import numpy as np

from oaml_mm.apis.photo_cli import _boxes, add_photo_args, format_reports
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
            self.assertEqual(_boxes(path, 2), [[1.0, 2.0, 30.0, 40.0], None])
            with self.assertRaisesRegex(ImageInputError, 'expected 3 line'):
                _boxes(path, 3)
            with open(path, 'w') as f:
                f.write('1 2 x 4\n')
            with self.assertRaisesRegex(ImageInputError,
                                        'b.txt, line 1: expected 4 numbers'):
                _boxes(path, 1)

    def test_options_and_report_lines(self):
        p = argparse.ArgumentParser()
        add_photo_args(p)
        args = p.parse_args(['--faces', 'all', '--align', 'eyes'])
        self.assertEqual((args.faces, args.detect, args.align, args.boxes),
                         ('all', 'auto', 'eyes', None))
        reps = [dict(image='/x/a.jpg', path='aligned-input', score=None),
                dict(image='/x/b.jpg', path='detected-eyes', score=0.91234,
                     note='nose off')]
        self.assertEqual(format_reports(reps),
                         'face: b.jpg: detected-eyes, detector score 0.912 '
                         '(nose off)')
        self.assertEqual(format_reports(reps[:1]), '')


if __name__ == '__main__':
    unittest.main()
