"""MXFaceDataset over small .rec files in both layouts, and its bad-input errors."""
import os.path as osp
import pickle
import tempfile
import unittest

import numpy as np

from oaml_mm.datasets import (IndexedRecordWriter, IRHeader, MXFaceDataset,
                              pack_record, write_insightface_rec)
from oaml_mm.errors import DataFormatError

from .helpers import encode, make_face


class TestMXFaceDataset(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name
        self.samples = [(encode(make_face(lab, i)), lab)
                        for lab in (2, 0, 1) for i in range(lab + 1)]
        write_insightface_rec(self.root, self.samples, num_classes=3)

    def tearDown(self):
        self.tmp.cleanup()

    def test_header_layout(self):
        ds = MXFaceDataset(self.root)
        self.assertEqual(ds.layout, 'header')
        self.assertEqual(len(ds), 6)
        self.assertEqual(ds.metainfo['num_classes'], 3)
        np.testing.assert_array_equal(ds.get_gt_labels(), [0, 1, 1, 2, 2, 2])
        item = ds[3]
        self.assertEqual(item['gt_label'], 2)
        self.assertEqual(item['img'].shape, (32, 32, 3))
        # decoded as RGB: channel 0 carries label * 40
        self.assertAlmostEqual(float(item['img'][2, 2, 0]), 80, delta=4)
        self.assertAlmostEqual(float(item['img'][2, 2, 2]), 128, delta=4)
        clone = pickle.loads(pickle.dumps(ds))
        self.assertEqual(clone[0]['gt_label'], 0)

    def test_plain_layout_vector_labels(self):
        rec, idx = osp.join(self.root, 'p.rec'), osp.join(self.root, 'p.idx')
        with IndexedRecordWriter(rec, idx) as w:
            for k in range(4):
                w.write_idx(k, pack_record(IRHeader(0, (k % 2, 9.0), k, 0),
                                           encode(make_face(k % 2))))
        ds = MXFaceDataset(self.root, rec_file='p.rec', idx_file='p.idx',
                           property_file='none', num_classes=2)
        self.assertEqual(ds.layout, 'plain')
        self.assertEqual(len(ds), 4)
        np.testing.assert_array_equal(ds.get_gt_labels(), [0, 1, 0, 1])
        self.assertEqual(ds[3]['gt_label'], 1)

    def test_label_outside_num_classes(self):
        ds = MXFaceDataset(self.root, num_classes=2)
        with self.assertRaisesRegex(DataFormatError,
                                    r'train\.rec, record 4.*label 2 outside'):
            ds[3]

    def test_undecodable_raise_and_skip(self):
        rec, idx = osp.join(self.root, 'b.rec'), osp.join(self.root, 'b.idx')
        with IndexedRecordWriter(rec, idx) as w:
            w.write_idx(0, pack_record(IRHeader(0, 0, 0, 0), b'not a jpeg'))
            w.write_idx(1, pack_record(IRHeader(0, 1, 1, 0),
                                       encode(make_face(1))))
        kw = dict(rec_file='b.rec', idx_file='b.idx', property_file='none')
        with self.assertRaisesRegex(DataFormatError, r'b\.rec, record 0.*decode'):
            MXFaceDataset(self.root, **kw)[0]
        ds = MXFaceDataset(self.root, on_bad_image='skip', **kw)
        item = ds[0]  # replaced by a random other sample
        self.assertEqual(item['gt_label'], 1)
        self.assertGreaterEqual(ds.num_skipped(), 1)
        self.assertGreaterEqual(ds.log_skipped(), 1)
        self.assertEqual(ds.num_skipped(), 0)

    def test_corrupt_file_errors(self):
        with open(osp.join(self.root, 'train.rec'), 'r+b') as f:
            f.truncate(osp.getsize(osp.join(self.root, 'train.rec')) - 40)
        with self.assertRaisesRegex(DataFormatError, 'past the end|truncated'):
            ds = MXFaceDataset(self.root)
            for i in range(len(ds)):
                ds[i]
            ds.get_gt_labels()


if __name__ == '__main__':
    unittest.main()
