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


def _write(rec, idx, records):
    """Write ``{key: payload}`` (any keys, sparse ones included)."""
    with IndexedRecordWriter(rec, idx) as w:
        for key, payload in records.items():
            w.write_idx(key, payload)


class TestMXFaceDatasetBadHeaders(unittest.TestCase):
    """Header values a damaged or crafted file may hold (issue 15 item 5)."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name
        self.rec = osp.join(self.root, 'train.rec')
        self.img = encode(make_face(0))

    def tearDown(self):
        self.tmp.cleanup()

    def _header_file(self, first, end):
        records = {0: pack_record(IRHeader(0, (first, end), 0, 0), b'')}
        records.update({k: pack_record(IRHeader(0, 0.0, k, 0), self.img)
                        for k in (1, 2)})
        records[3] = pack_record(IRHeader(0, (1, 3), 3, 0), b'')
        _write(self.rec, osp.join(self.root, 'train.idx'), records)

    def test_header_label_out_of_range_or_not_finite(self):
        self._header_file(3, 4)
        ds = MXFaceDataset(self.root)
        self.assertEqual(len(ds), 2)
        np.testing.assert_array_equal(ds.get_gt_labels(), [0, 0])
        # 1e12 once asked np.arange for 7 TiB; NaN / inf / 1e30 gave bare
        # ValueError / OverflowError.
        for first, end in ((1e12, 1e12 + 1), (3, 1e12), (float('nan'), 4),
                           (3, float('inf')), (1e30, 4), (2.5, 4), (-3, 4)):
            self._header_file(first, end)
            with self.assertRaisesRegex(
                    DataFormatError, r'train\.rec, record 0, field '
                    r"'(header )?label"):
                MXFaceDataset(self.root)

    def test_image_label_not_an_exact_integer(self):
        for label in (float('nan'), float('inf'), 1e30, 2.5, 2.0**25):
            _write(self.rec, osp.join(self.root, 'train.idx'),
                   {0: pack_record(IRHeader(0, label, 0, 0), self.img)})
            ds = MXFaceDataset(self.root)
            with self.assertRaisesRegex(DataFormatError,
                                        r"record 0, field 'label'.*2\*\*24"):
                ds[0]
            with self.assertRaisesRegex(DataFormatError, 'label'):
                MXFaceDataset(self.root).get_gt_labels()

    def test_property_not_utf8_or_out_of_range(self):
        self._header_file(3, 4)
        for raw in (b'\xff\xfe3,112,112', b'1e12,112,112', b'0,112,112',
                    b'4294967296,112,112'):
            with open(osp.join(self.root, 'property'), 'wb') as f:
                f.write(raw)
            with self.assertRaisesRegex(DataFormatError, r'property'):
                MXFaceDataset(self.root)

    def test_duplicate_idx_key(self):
        # The same key twice once yielded the record twice, silently.
        rec, idx = self.rec, osp.join(self.root, 'train.idx')
        _write(rec, idx, {0: pack_record(IRHeader(0, 0.0, 0, 0), self.img)})
        with open(idx, 'a') as f:
            f.write('0\t0\n')
        with self.assertRaisesRegex(DataFormatError,
                                    r'train\.idx, record 0.*listed twice'):
            MXFaceDataset(self.root)


class TestFloat32HeaderResolution(unittest.TestCase):
    """Counts and ranges above 2**24 (Glint360K: 17,186,134 images), issue 14.2.

    A sparse index holds only the records around the end of the images, at their
    real keys: the resolution reads nothing else.
    """

    N = 17186134  # float32(N + 1) == N + 2: read naively, one image too many

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name
        n = self.N
        img = encode(make_face(0))
        records = {0: pack_record(IRHeader(0, (n + 1, n + 3), 0, 0), b'')}
        # identity 7: keys .. n - 2, identity 8: keys n - 1 and n
        for key in range(n - 6, n + 1):
            label = 7.0 if key <= n - 2 else 8.0
            records[key] = pack_record(IRHeader(0, label, key, 0), img)
        records[n + 1] = pack_record(IRHeader(0, (n - 9, n - 1), n + 1, 0), b'')
        records[n + 2] = pack_record(IRHeader(0, (n - 1, n + 1), n + 2, 0), b'')
        self.records = records
        _write(osp.join(self.root, 'train.rec'), osp.join(self.root, 'train.idx'),
               records)

    def tearDown(self):
        self.tmp.cleanup()

    def test_rounded_values(self):
        n = self.N
        # What the file holds for N + 1, end, and identity 8's (start, end).
        f32 = [int(np.float32(v)) for v in (n + 1, n + 3, n - 1, n + 1)]
        self.assertEqual(f32, [n + 2, n + 2, n - 2, n + 2])

    def test_header_and_identity_ranges_resolved_exactly(self):
        from oaml_mm.datasets.recordio import (IndexedRecordReader,
                                               unpack_record)
        n = self.N
        ds = MXFaceDataset(self.root, lazy_init=True)
        ds.reader = IndexedRecordReader(ds.rec_path, ds.idx_path)
        header0, _ = unpack_record(ds.reader.read(0))
        self.assertEqual(ds._resolve_header(header0), (n + 1, n + 3))

        def label_of(key):
            return int(unpack_record(ds.reader.read(int(key)))[0].label)

        h = ds.reader.read_header(n + 2)
        self.assertEqual(ds._resolve_range(h.label, n + 2, n - 1, n, label_of),
                         (n - 1, n + 1))
        # Without the chain (start of the previous identity unknown), the label
        # change between keys n - 2 and n - 1 tells the start.
        self.assertEqual(ds._resolve_range(h.label, n + 2, 1, n, label_of),
                         (n - 1, n + 1))
        # The sparse index cannot be a whole data set: refused, not allocated.
        with self.assertRaisesRegex(DataFormatError, r'needs 17186137 records'):
            MXFaceDataset(self.root)

    def test_records_that_fit_no_candidate_are_refused(self):
        from oaml_mm.datasets.recordio import IndexedRecordReader
        n = self.N
        # Key n is an identity record too: no candidate of N + 1 has an image
        # before it and an identity record (or nothing) at it.
        self.records[n] = pack_record(IRHeader(0, (n - 1, n), n, 0), b'')
        _write(osp.join(self.root, 'train.rec'), osp.join(self.root, 'train.idx'),
               self.records)
        ds = MXFaceDataset(self.root, lazy_init=True)
        ds.reader = IndexedRecordReader(ds.rec_path, ds.idx_path)
        from oaml_mm.datasets.recordio import unpack_record
        with self.assertRaisesRegex(DataFormatError,
                                    r'rounding of one of .*agree with 0'):
            ds._resolve_header(unpack_record(ds.reader.read(0))[0])


if __name__ == '__main__':
    unittest.main()
