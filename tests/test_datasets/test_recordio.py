"""RecordIO format layer: byte-exact framing, round trips and corrupt files."""
import os
import os.path as osp
import struct
import tempfile
import unittest

import numpy as np

from oaml_mm.datasets.recordio import (RECORDIO_MAGIC, IndexedRecordReader,
                                       IndexedRecordWriter, IRHeader,
                                       encode_recordio, pack_record,
                                       unpack_record, write_insightface_rec)
from oaml_mm.errors import DataFormatError, MissingFileError

MAGIC = struct.pack('<I', RECORDIO_MAGIC)


class TestPackRecord(unittest.TestCase):

    def test_scalar_label_layout(self):
        buf = pack_record(IRHeader(9, 3.0, 7, 1), b'abc')
        # flag is recomputed to 0 for a scalar label, as mx.recordio.pack does
        self.assertEqual(buf, struct.pack('<IfQQ', 0, 3.0, 7, 1) + b'abc')
        header, payload = unpack_record(buf)
        self.assertEqual(header, IRHeader(0, 3.0, 7, 1))
        self.assertEqual(payload, b'abc')

    def test_vector_label_layout(self):
        buf = pack_record(IRHeader(0, (5, 9), 0, 0), b'')
        expected = struct.pack('<IfQQ', 2, 0.0, 0, 0) + \
            struct.pack('<2f', 5.0, 9.0)
        self.assertEqual(buf, expected)
        header, payload = unpack_record(buf)
        self.assertEqual(header.flag, 2)
        np.testing.assert_array_equal(header.label, [5.0, 9.0])
        self.assertEqual(payload, b'')

    def test_short_payload(self):
        with self.assertRaises(DataFormatError):
            unpack_record(b'\0' * 10, 'x.rec', 3)
        buf = struct.pack('<IfQQ', 4, 0.0, 0, 0) + b'\0' * 8
        with self.assertRaisesRegex(DataFormatError, 'x.rec, record 3'):
            unpack_record(buf, 'x.rec', 3)


class TestEncodeRecordIO(unittest.TestCase):

    def test_plain_record_hand_computed(self):
        out = encode_recordio(b'hello')
        self.assertEqual(out, MAGIC + struct.pack('<I', 5) + b'hello' + b'\0' * 3)
        self.assertEqual(encode_recordio(b'abcd'),
                         MAGIC + struct.pack('<I', 4) + b'abcd')
        self.assertEqual(encode_recordio(b''), MAGIC + struct.pack('<I', 0))

    def test_split_at_aligned_magic(self):
        payload = b'ABCD' + MAGIC + b'EFGHIJ'
        expected = (MAGIC + struct.pack('<I', (1 << 29) | 4) + b'ABCD' +
                    MAGIC + struct.pack('<I', (3 << 29) | 6) + b'EFGHIJ' +
                    b'\0\0')
        self.assertEqual(encode_recordio(payload), expected)

    def test_unaligned_magic_not_split(self):
        payload = b'AB' + MAGIC + b'CD'
        self.assertEqual(encode_recordio(payload),
                         MAGIC + struct.pack('<I', 8) + payload)

    def test_leading_and_repeated_magic(self):
        payload = MAGIC + MAGIC + b'Z'
        expected = (MAGIC + struct.pack('<I', (1 << 29) | 0) +
                    MAGIC + struct.pack('<I', (2 << 29) | 0) +
                    MAGIC + struct.pack('<I', (3 << 29) | 1) + b'Z' + b'\0' * 3)
        self.assertEqual(encode_recordio(payload), expected)


class TestIndexedRecordIO(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.rec = osp.join(self.tmp.name, 'a.rec')
        self.idx = osp.join(self.tmp.name, 'a.idx')

    def tearDown(self):
        self.tmp.cleanup()

    def _write(self, payloads):
        with IndexedRecordWriter(self.rec, self.idx) as w:
            for k, p in payloads.items():
                w.write_idx(k, p)

    def test_round_trip_and_idx_text(self):
        payloads = {0: b'x' * 5, 1: b'A' * 4 + MAGIC + b'B' * 3, 7: b''}
        self._write(payloads)
        with open(self.idx) as f:
            self.assertEqual(f.read(), '0\t0\n1\t16\n7\t40\n')
        reader = IndexedRecordReader(self.rec, self.idx)
        self.assertEqual(len(reader), 3)
        for k, p in payloads.items():
            self.assertEqual(reader.read(k), p)
        reader.close()

    def test_pickle_and_reopen_after_pid_change(self):
        import pickle
        self._write({0: b'abc', 1: b'defgh'})
        reader = IndexedRecordReader(self.rec, self.idx)
        self.assertEqual(reader.read(1), b'defgh')
        clone = pickle.loads(pickle.dumps(reader))
        self.assertIsNone(clone._fd)
        self.assertEqual(clone.read(0), b'abc')
        reader._pid = -1  # as seen from a forked child: must open its own handle
        self.assertEqual(reader.read(0), b'abc')
        self.assertEqual(reader._pid, os.getpid())

    def test_bad_magic(self):
        self._write({0: b'abcd', 1: b'efgh'})
        with open(self.rec, 'r+b') as f:
            f.seek(12)
            f.write(b'\x01\x02\x03\x04')
        reader = IndexedRecordReader(self.rec, self.idx)
        self.assertEqual(reader.read(0), b'abcd')
        with self.assertRaisesRegex(DataFormatError,
                                    r'a\.rec, record 1.*bad magic.*offset 12'):
            reader.read(1)

    def test_truncated_record(self):
        self._write({0: b'abcd', 1: b'efghijklmnop'})
        with open(self.rec, 'r+b') as f:
            f.truncate(12 + 8 + 5)
        reader = IndexedRecordReader(self.rec, self.idx)
        with self.assertRaisesRegex(DataFormatError,
                                    r'record 1.*truncated.*12 bytes'):
            reader.read(1)

    def test_offset_past_eof(self):
        self._write({0: b'abcd'})
        with open(self.idx, 'a') as f:
            f.write('1\t4096\n')
        with self.assertRaisesRegex(DataFormatError,
                                    r'a\.idx, record 1.*offset 4096.*past the end'):
            IndexedRecordReader(self.rec, self.idx)

    def test_bad_idx_line_and_missing_files(self):
        self._write({0: b'abcd'})
        with open(self.idx, 'a') as f:
            f.write('oops\n')
        with self.assertRaisesRegex(DataFormatError, 'line 2'):
            IndexedRecordReader(self.rec, self.idx)
        with self.assertRaises(MissingFileError):
            IndexedRecordReader(osp.join(self.tmp.name, 'none.rec'))

    def test_unknown_key(self):
        self._write({0: b'abcd'})
        with self.assertRaisesRegex(DataFormatError, 'record 5'):
            IndexedRecordReader(self.rec, self.idx).read(5)


class TestInsightfaceLayout(unittest.TestCase):

    def test_layout(self):
        with tempfile.TemporaryDirectory() as tmp:
            samples = [(b'img-c1', 1), (b'img-a0', 0), (b'img-d1', 1),
                       (b'img-b0', 0), (b'img-e3', 3)]
            n = write_insightface_rec(tmp, samples, num_classes=4)
            self.assertEqual(n, 5)
            with open(osp.join(tmp, 'property')) as f:
                self.assertEqual(f.read(), '4,112,112')
            r = IndexedRecordReader(osp.join(tmp, 'train.rec'),
                                    osp.join(tmp, 'train.idx'))
            h0, _ = unpack_record(r.read(0))
            self.assertEqual(h0.flag, 2)
            np.testing.assert_array_equal(h0.label, [6, 9])
            labels = [unpack_record(r.read(k))[0].label for k in range(1, 6)]
            self.assertEqual(labels, [0.0, 0.0, 1.0, 1.0, 3.0])
            self.assertEqual(unpack_record(r.read(1))[1], b'img-a0')
            self.assertEqual(unpack_record(r.read(3))[1], b'img-c1')
            ranges = [tuple(unpack_record(r.read(k))[0].label)
                      for k in range(6, 9)]
            self.assertEqual(ranges, [(1, 3), (3, 5), (5, 6)])
            self.assertEqual(r.read_header(6).label.tolist(), [1.0, 3.0])
            with self.assertRaises(ValueError):
                write_insightface_rec(tmp, [(b'x', 4)], num_classes=4)


if __name__ == '__main__':
    unittest.main()
