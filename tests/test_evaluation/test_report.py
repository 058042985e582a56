import csv
import os.path as osp
import tempfile
import unittest

import numpy as np

from oaml_mm.evaluation.report import (format_table, report_test_results,
                                       write_csv)


class _M:
    dataset_name = 'ijbc'
    roc_curves = {'adaface': (np.array([0, 1e-4, 1e-2, 1.]),
                              np.array([0, .5, .9, 1.])),
                  'fused': (np.array([0, 1e-3, 1.]), np.array([0, .8, 1.]))}


class _Vis:
    def __init__(self):
        self.images = {}

    def add_image(self, name, img):
        self.images[name] = img


class TestReport(unittest.TestCase):
    metrics = {'lfw/adaface/accuracy': 99.5, 'lfw/fused/accuracy': 99.7,
               'lfw/adaface/std': 0.3, 'other_key': 1.0}

    def test_table(self):
        t = format_table(self.metrics).splitlines()
        self.assertEqual(t[0].split(), ['dataset', 'branch', 'accuracy', 'std'])
        self.assertEqual(t[2].split(), ['lfw', 'adaface', '99.5000', '0.3000'])
        self.assertEqual(t[3].split(), ['lfw', 'fused', '99.7000'])

    def test_threshold_columns_keep_one_unit_each(self):
        m = {'lfw/adaface/threshold_cos': 0.31, 'lfw/qaconv/threshold_qaconv': 2.5,
             'lfw/fused/threshold_fused': 1.1}
        t = format_table(m).splitlines()
        self.assertEqual(t[0].split(), ['dataset', 'branch', 'threshold_cos',
                                        'threshold_qaconv', 'threshold_fused'])
        self.assertEqual(t[2].split(), ['lfw', 'adaface', '0.3100'])
        self.assertEqual(t[3].split(), ['lfw', 'qaconv', '2.5000'])
        self.assertEqual(t[5:], [
            ('threshold_cos: mean best 10-fold threshold, cosine similarity of '
             'the embeddings (accept when above)'),
            ('threshold_qaconv: mean best 10-fold threshold, QAConv score '
             '(accept when above)'),
            ('threshold_fused: mean best 10-fold threshold, fused z-score '
             '(accept when above)')])
        self.assertEqual(len(format_table(self.metrics).splitlines()), 4)

    def test_csv_png_and_visualizer(self):
        with tempfile.TemporaryDirectory() as d:
            vis = _Vis()
            paths = report_test_results(self.metrics, d, [_M()], vis,
                                        out=osp.join(d, 'm.json'))
            self.assertEqual(paths['csv'], osp.join(d, 'm.csv'))
            with open(paths['csv']) as f:
                rows = list(csv.reader(f))
            self.assertEqual(rows[1], ['lfw', 'adaface', '99.5', '0.3'])
            self.assertTrue(osp.getsize(paths['roc_ijbc']) > 1000)
            self.assertEqual(vis.images['roc_ijbc'].ndim, 3)
            write_csv({}, osp.join(d, 'e.csv'))
