"""Bad input, fuzzed: random and mutated bytes into every reader of user files.

Property of each reader: it returns the correct data, or raises an
:class:`~oaml_mm.errors.OAMLError` naming the file (and the record or line where the
format has them). Never a hang (each case runs under a 10 s alarm), a crash, a bare
``IndexError``/``KeyError``/``struct.error``/``OverflowError``, or silently wrong data:
where a mutation left a record's bytes untouched, what is returned must equal the
original.

Hypothesis runs derandomized (the same cases on every run) with bounded
``max_examples``; the number of cases run per target is printed at the end of the
module and written as JSON to ``$OAML_FUZZ_REPORT`` when that is set.
"""
import json
import os
import os.path as osp
import pickle
import signal
import struct
import tempfile
import zlib
from collections import Counter
from contextlib import contextmanager
from unittest import TestCase

import cv2
import numpy as np
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from oaml_mm.datasets import (FaceImageFolder, IJBDataset, IndexedRecordReader,
                              IRHeader, MXFaceDataset, VerificationBinDataset,
                              pack_record, read_1n_csv, read_ijb_landmarks,
                              read_ijb_template_pairs, read_ijb_tid_mid,
                              unpack_record, write_insightface_rec)
from oaml_mm.datasets.occlusion_mask_dataset import (
    OcclusionMaskDataset, write_occlusion_mask_sample)
from oaml_mm.datasets.recordio import IndexedRecordWriter
from oaml_mm.datasets.verification_bin import load_verification_bin
from oaml_mm.errors import ConfigError, OAMLError
from oaml_mm.utils import load_config

CASES: Counter = Counter()
FUZZ = settings(max_examples=int(os.environ.get('OAML_FUZZ_EXAMPLES', 300)),
                deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def tearDownModule():
    print('\nfuzz cases run: ' + ', '.join(
        f'{k}={v}' for k, v in sorted(CASES.items())) +
        f' (total {sum(CASES.values())})')
    report = os.environ.get('OAML_FUZZ_REPORT')
    if report:
        with open(report, 'w') as f:
            json.dump(dict(CASES), f, indent=2, sort_keys=True)


class Hang(Exception):
    pass


@contextmanager
def no_hang(seconds: int = 60):
    # A reader that loops forever is caught; a generous limit so that a loaded
    # machine (CI's two cores run two test workers) never reads as a hang: one
    # case takes milliseconds, a whole-folder case well under a second.
    def on_alarm(signum, frame):
        raise Hang(f'no result after {seconds} s')
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


mutations = st.lists(
    st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1,
    max_size=4)


def mutate(raw: bytes, muts, cut=None):
    """Set bytes at the given positions (modulo the size); optionally truncate."""
    buf = bytearray(raw)
    touched = set()
    for pos, value in muts:
        if buf:
            pos %= len(buf)
            if buf[pos] != value:
                buf[pos] = value
                touched.add(pos)
    if cut is not None and buf:
        cut %= len(buf) + 1
        touched.update(range(cut, len(buf)))
        del buf[cut:]
    return bytes(buf), touched


class _FuzzCase(TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name, raw: bytes) -> str:
        path = osp.join(self.tmp.name, name)
        with open(path, 'wb') as f:
            f.write(raw)
        return path

    def assertOurError(self, err, *paths):
        self.assertIsInstance(err, OAMLError,
                              f'{type(err).__name__}: {err}')
        self.assertTrue(any(str(p) in str(err) for p in paths),
                        f'the error does not name the file: {err}')


# --- MXNet RecordIO -------------------------------------------------------------------
payloads = st.lists(
    st.one_of(st.binary(min_size=0, max_size=40),
              # aligned magic words inside: split (continued) records
              st.binary(min_size=0, max_size=3).map(
                  lambda b: b.ljust(4, b'\0') + struct.pack('<I', 0xced7230a) +
                  b'tail')),
    min_size=1, max_size=5)


class TestFuzzRecordIO(_FuzzCase):

    def _valid(self, items):
        rec = osp.join(self.tmp.name, 'ok.rec')
        idx = osp.join(self.tmp.name, 'ok.idx')
        records = [pack_record(IRHeader(0, float(i), i, 0), p)
                   for i, p in enumerate(items)]
        with IndexedRecordWriter(rec, idx) as w:
            for i, r in enumerate(records):
                w.write_idx(i, r)
        with open(rec, 'rb') as f, open(idx, 'rb') as g:
            return records, f.read(), g.read()

    def _read_all(self, rec, idx):
        """{key: payload or OAMLError}; raises whatever else escaped."""
        try:
            reader = IndexedRecordReader(rec, idx)
        except OAMLError as e:
            self.assertOurError(e, rec, idx)
            return None
        out = {}
        for key in reader.keys.tolist():
            try:
                buf = reader.read(key)
                unpack_record(buf, rec, key)
                reader.read_header(key)
                out[key] = buf
            except OAMLError as e:
                self.assertOurError(e, rec, idx)
                out[key] = e
        reader.close()
        return out

    @FUZZ
    @given(items=payloads, muts=mutations,
           cut=st.one_of(st.none(), st.integers(0, 10**6)))
    # A payload holding the magic word is split in two parts; zeroing the first
    # part's flag byte made it read as a whole (shorter) record.
    @example(items=[b'\x00\x00\x00\x00\n#\xd7\xce'], muts=[(7, 0)], cut=None)
    def test_mutated_rec(self, items, muts, cut):
        CASES['recordio_mutated_rec'] += 1
        records, rec_raw, idx_raw = self._valid(items)
        offsets = [int(line.split(b'\t')[1]) for line in idx_raw.splitlines()]
        ends = offsets[1:] + [len(rec_raw)]
        bad, touched = mutate(rec_raw, muts, cut)
        rec = self.write('m.rec', bad)
        idx = self.write('m.idx', idx_raw)
        with no_hang():
            got = self._read_all(rec, idx)
        if got is None:
            return
        for key, value in got.items():
            if isinstance(value, Exception):
                continue
            span = set(range(offsets[key], ends[key]))
            if not span & touched:
                self.assertEqual(value, records[key], f'record {key}')
            else:
                # No checksum in the format: payload bytes may change, but the
                # framing must not: same length, changed only where mutated.
                self.assertEqual(len(value), len(records[key]),
                                 f'record {key}: wrong length returned')

    @FUZZ
    @given(raw=st.binary(max_size=300), items=payloads)
    def test_random_rec_bytes(self, raw, items):
        CASES['recordio_random_rec'] += 1
        _, _, idx_raw = self._valid(items)
        rec = self.write('r.rec', raw)
        idx = self.write('r.idx', idx_raw)
        with no_hang():
            self._read_all(rec, idx)

    @FUZZ
    @given(lines=st.lists(st.one_of(
        st.text(alphabet='0123456789\t -+_x. \n', max_size=30),
        st.binary(max_size=30).map(lambda b: b.decode('latin1')),
        st.tuples(st.integers(-2**70, 2**70), st.integers(-2**70, 2**70))
        .map(lambda t: f'{t[0]}\t{t[1]}')), max_size=6), items=payloads)
    @example(lines=['1\t99999999999999999999999'], items=[b'x'])
    @example(lines=['1\t0', '1\t0'], items=[b'x'])
    def test_random_idx(self, lines, items):
        CASES['recordio_random_idx'] += 1
        _, rec_raw, _ = self._valid(items)
        rec = self.write('i.rec', rec_raw)
        idx = self.write('i.idx', '\n'.join(lines).encode('utf-8',
                                                          'surrogateescape'))
        with no_hang():
            self._read_all(rec, idx)


# --- verification .bin ----------------------------------------------------------------
class TestFuzzVerificationBin(_FuzzCase):

    @FUZZ
    @given(raw=st.binary(max_size=200))
    @example(raw=b'\x80\x02]q\x00(' * 30)
    def test_random_bytes(self, raw):
        CASES['bin_random'] += 1
        path = self.write('r.bin', raw)
        with no_hang():
            try:
                images, issame = load_verification_bin(path)
            except OAMLError as e:
                self.assertOurError(e, path)
                return
        self.assertEqual(len(images), 2 * len(issame))
        self.assertTrue(all(isinstance(b, bytes) for b in images))
        self.assertTrue(all(isinstance(b, bool) for b in issame))

    @FUZZ
    @given(n=st.integers(1, 3), seed=st.integers(0, 2**16),
           protocol=st.sampled_from([2, 4]), muts=mutations,
           cut=st.one_of(st.none(), st.integers(0, 10**6)))
    def test_mutated(self, n, seed, protocol, muts, cut):
        CASES['bin_mutated'] += 1
        rng = np.random.RandomState(seed)
        images = [b'\xff\xd8' + rng.bytes(int(rng.randint(6, 20)))
                  for _ in range(2 * n)]
        issame = [bool(x) for x in rng.randint(0, 2, n)]
        raw = pickle.dumps((images, issame), protocol=protocol)
        spans = []
        for b in images:
            # Protocol 2 stores bytes as _codecs.encode(latin1 text): UTF-8 inside.
            enc = b if protocol > 2 else b.decode('latin1').encode('utf-8')
            start = raw.find(enc)
            self.assertGreaterEqual(start, 0)
            spans.append(set(range(start, start + len(enc))))
        bad, touched = mutate(raw, muts, cut)
        path = self.write('m.bin', bad)
        with no_hang():
            try:
                got_images, got_issame = load_verification_bin(path)
            except OAMLError as e:
                self.assertOurError(e, path)
                return
        self.assertEqual(len(got_images), 2 * len(got_issame))
        if len(got_images) == len(images):
            for i, (a, b) in enumerate(zip(images, got_images)):
                if not spans[i] & touched and a != b:
                    # Only the bytes of another field changed: image i must
                    # come back as it was.
                    self.fail(f'image {i} changed without being mutated')


# --- IJB meta files -------------------------------------------------------------------
def _tid_mid_text(rows):
    return ''.join(f'{n}.jpg {t} {m}\n' for n, t, m in rows)


def _landmark_text(rows):
    return ''.join(
        f'{n}.jpg ' + ' '.join(f'{v:.3f}' for v in vals) + '\n'
        for n, vals in rows)


ijb_noise = st.binary(max_size=120)
ijb_texty = st.text(alphabet='0123456789 .-+\neE_jpgnaif\t\r\x00', max_size=120)


class TestFuzzIJBMeta(_FuzzCase):

    def _check(self, reader, path, oracle):
        try:
            with no_hang():
                got = reader(path)
        except OAMLError as e:
            self.assertOurError(e, path)
            return
        expected = oracle(path)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    def _rows(self, path, ncols):
        """The oracle: plain Python over universal-newline text lines (a
        leading UTF-8 byte-order mark is not part of the text)."""
        with open(path, encoding='utf-8-sig', newline=None) as f:
            rows = [line.split() for line in f if line.split()]
        for r in rows:
            self.assertEqual(len(r), ncols, f'accepted a bad line: {r}')
        return rows

    def _oracle_tid(self, path):
        rows = self._rows(path, 3)
        return ([r[0] for r in rows], [int(r[1]) for r in rows],
                [int(r[2]) for r in rows])

    def _oracle_pairs(self, path):
        rows = self._rows(path, 3)
        return tuple([int(r[i]) for r in rows] for i in range(3))

    def _oracle_lmk(self, path):
        rows = self._rows(path, 12)
        vals = np.array([[float(x) for x in r[1:]] for r in rows],
                        np.float32).reshape(-1, 11)
        self.assertTrue(np.isfinite(vals).all(), 'non-finite value accepted')
        return ([r[0] for r in rows],
                vals[:, :10].reshape(-1, 5, 2), vals[:, 10])

    @FUZZ
    @given(raw=st.one_of(ijb_noise, ijb_texty.map(str.encode)))
    @example(raw=b'a.jpg 1 99999999999999999999\n')
    @example(raw=b'a.jpg 1 2\n\xff\xfe.jpg 3 4\n')
    def test_tid_mid_random(self, raw):
        CASES['ijb_tid_mid_random'] += 1
        self._check(read_ijb_tid_mid, self.write('t.txt', raw),
                    self._oracle_tid)

    @FUZZ
    @given(raw=st.one_of(ijb_noise, ijb_texty.map(str.encode)))
    @example(raw=b'1 2 1\n3 4 99999999999999999999\n')
    @example(raw=b'1 2 1\n3 4\n5 6 0 1\n')
    @example(raw=b'1_0 2 1\n')
    def test_pairs_random(self, raw):
        CASES['ijb_pairs_random'] += 1
        self._check(read_ijb_template_pairs, self.write('p.txt', raw),
                    self._oracle_pairs)

    @FUZZ
    @given(raw=st.one_of(ijb_noise, ijb_texty.map(str.encode)))
    @example(raw=b'a.jpg 1 2 3 4 5 6 7 8 9 nan 0.9\n')
    @example(raw=b'a.jpg 1 2 3 4 5 6 7 8 9 10 inf\n')
    def test_landmarks_random(self, raw):
        CASES['ijb_landmarks_random'] += 1
        self._check(read_ijb_landmarks, self.write('l.txt', raw),
                    self._oracle_lmk)

    @FUZZ
    @given(rows=st.lists(st.tuples(st.integers(0, 999), st.integers(0, 99),
                                   st.integers(0, 99)), min_size=1,
                         max_size=4), muts=mutations)
    def test_mutated_meta(self, rows, muts):
        CASES['ijb_mutated'] += 1
        raw = _tid_mid_text(rows).encode()
        self._check(read_ijb_tid_mid, self.write('t.txt', mutate(raw, muts)[0]),
                    self._oracle_tid)
        raw = ''.join(f'{a} {b} {c % 2}\n' for a, b, c in rows).encode()
        self._check(read_ijb_template_pairs,
                    self.write('p.txt', mutate(raw, muts)[0]),
                    self._oracle_pairs)
        raw = _landmark_text([(a, [b + 0.5 * i for i in range(11)])
                              for a, b, _ in rows]).encode()
        self._check(read_ijb_landmarks,
                    self.write('l.txt', mutate(raw, muts)[0]),
                    self._oracle_lmk)


# --- occlusion masks ------------------------------------------------------------------
class TestFuzzMaskLoader(_FuzzCase):

    def setUp(self):
        super().setUp()
        rng = np.random.RandomState(0)
        self.root = osp.join(self.tmp.name, 'occ')
        image = rng.randint(0, 255, (16, 16, 3), np.uint8)
        self.mask = (rng.rand(16, 16) > 0.5).astype(np.uint8) * 255
        write_occlusion_mask_sample(self.root, 'id0/a', image, self.mask)
        self.mask_path = osp.join(self.root, 'masks', 'id0', 'a.png')
        with open(self.mask_path, 'rb') as f:
            self.mask_raw = f.read()

    @FUZZ
    @given(muts=mutations, cut=st.one_of(st.none(), st.integers(0, 10**6)),
           raw=st.one_of(st.none(), st.binary(max_size=200)))
    def test_mutated_mask(self, muts, cut, raw):
        CASES['mask_mutated'] += 1
        bad = raw if raw is not None else mutate(self.mask_raw, muts, cut)[0]
        with open(self.mask_path, 'wb') as f:
            f.write(bad)
        ds = OcclusionMaskDataset(data_root=self.root, pipeline=[])
        with no_hang():
            try:
                sample = ds.prepare_data(0)
            except OAMLError as e:
                self.assertOurError(e, self.mask_path)
                return
        # PNG chunks carry CRCs: a decoded mask must be the original one.
        np.testing.assert_array_equal(
            (sample['visibility_mask'] * 255).round().astype(np.uint8),
            self.mask)


# --- data set classes over whole folders ----------------------------------------------
# The readers above are the low-level parsers; the data set classes and tools add
# their own file handling (property files, list files, folder scans, image decoding,
# mask encodings, path joins). Each case builds the class over a mutated copy of a
# small valid folder and reads every sample under both bad-image policies.
FUZZ_DS = settings(
    max_examples=max(1, int(os.environ.get('OAML_FUZZ_EXAMPLES', 300)) // 3),
    deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow,
                           HealthCheck.function_scoped_fixture])


def _jpeg(label: int, size: int = 16) -> bytes:
    img = np.full((size, size, 3), (label * 40) % 256, np.uint8)
    ok, buf = cv2.imencode('.png', img)
    assert ok
    return buf.tobytes()


def _huge_png() -> bytes:
    def chunk(kind, data):
        return (struct.pack('>I', len(data)) + kind + data +
                struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
    return (b'\x89PNG\r\n\x1a\n' +
            chunk(b'IHDR', struct.pack('>IIBBBBB', 65535, 65535, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(b'\0' * 16)) + chunk(b'IEND', b''))


image_bytes = st.one_of(
    st.binary(max_size=80), st.just(_huge_png()),
    st.tuples(st.integers(0, 4), mutations).map(
        lambda t: mutate(_jpeg(t[0]), t[1])[0]))


class _DatasetFuzz(_FuzzCase):

    def fresh(self) -> str:
        """A new folder for one example (setUp runs once per test, not example)."""
        return tempfile.mkdtemp(dir=self.tmp.name)

    def read_all(self, make, *paths, skip=True):
        """Build the data set and read every sample and label.

        Returns the list of samples (None where skipped) or None when an
        OAMLError naming one of ``paths`` was raised.
        """
        policies = ('raise', 'skip') if skip else ('raise', )
        out = None
        for policy in policies:
            try:
                with no_hang():
                    ds = make(on_bad_image=policy, max_refetch=2)
                    n = len(ds)
                    got = []
                    for i in range(n):
                        try:
                            got.append(ds.prepare_data(i))
                        except OAMLError as e:
                            self.assertOurError(e, *paths)
                            got.append(e)
                    try:
                        ds.get_gt_labels()
                    except ConfigError:
                        pass  # a data set without identity labels
                    except OAMLError as e:
                        self.assertOurError(e, *paths)
                    if policy == 'skip':
                        ds.log_skipped()
            except OAMLError as e:
                self.assertOurError(e, *paths)
                continue
            if policy == 'raise':
                out = got
        return out


class TestFuzzMXFaceDataset(_DatasetFuzz):

    def _folder(self, n_ids=3):
        root = osp.join(self.fresh(), 'rec')
        samples = [(_jpeg(lab), lab) for lab in range(n_ids) for _ in range(2)]
        write_insightface_rec(root, samples, num_classes=n_ids)
        return root

    def _files(self, root):
        return [osp.join(root, f) for f in ('train.rec', 'train.idx', 'property')]

    @FUZZ_DS
    @given(which=st.sampled_from(['train.rec', 'train.idx', 'property']),
           muts=mutations, cut=st.one_of(st.none(), st.integers(0, 10**6)),
           raw=st.one_of(st.none(), st.binary(max_size=60)))
    @example(which='property', muts=[(0, 0)], cut=None, raw=b'\xff3,112,112')
    @example(which='train.idx', muts=[(0, 0)], cut=None, raw=b'0\t0\n0\t0\n')
    def test_mutated_folder(self, which, muts, cut, raw):
        CASES['ds_mx_mutated'] += 1
        root = self._folder()
        path = osp.join(root, which)
        with open(path, 'rb') as f:
            orig = f.read()
        with open(path, 'wb') as f:
            f.write(raw if raw is not None else mutate(orig, muts, cut)[0])
        got = self.read_all(lambda **kw: MXFaceDataset(root, pipeline=[], **kw),
                            *self._files(root))
        if got is not None:
            # Never longer than the index, never a label outside the property.
            self.assertLessEqual(len(got), 8)
            for sample in got:
                if isinstance(sample, dict):
                    self.assertIn(sample['gt_label'], range(10**6))

    @FUZZ_DS
    @given(first=st.floats(width=32), end=st.floats(width=32))
    @example(first=1e12, end=1e12 + 1)
    @example(first=float('nan'), end=8.0)
    @example(first=7.0, end=float('inf'))
    @example(first=1e30, end=1e30)
    @example(first=1.0, end=1.0)  # exact but naming no image: found by hypothesis
    def test_header_labels(self, first, end):
        CASES['ds_mx_header_label'] += 1
        root = self._folder()
        rec, idx = self._files(root)[:2]
        reader = IndexedRecordReader(rec, idx)
        records = {int(k): reader.read(int(k)) for k in reader.keys}
        reader.close()
        records[0] = pack_record(IRHeader(0, (first, end), 0, 0), b'')
        with IndexedRecordWriter(rec, idx) as w:
            for k, buf in records.items():
                w.write_idx(k, buf)
        got = self.read_all(lambda **kw: MXFaceDataset(root, pipeline=[], **kw),
                            rec, idx)
        if got is not None:
            # Accepted only when the header names the real layout (7, 10).
            self.assertEqual((np.float32(first), np.float32(end)),
                             (np.float32(7), np.float32(10)))
            self.assertEqual([s['gt_label'] for s in got], [0, 0, 1, 1, 2, 2])


class TestFuzzFaceImageFolder(_DatasetFuzz):

    def _folder(self):
        root = osp.join(self.fresh(), 'imgs')
        for lab, name in enumerate(('alice', 'bob')):
            os.makedirs(osp.join(root, name))
            for i in range(2):
                with open(osp.join(root, name, f'{i}.png'), 'wb') as f:
                    f.write(_jpeg(lab))
        return root

    @FUZZ_DS
    @given(img=image_bytes, which=st.integers(0, 3))
    def test_image_bytes(self, img, which):
        CASES['ds_folder_image'] += 1
        root = self._folder()
        name = ['alice/0.png', 'alice/1.png', 'bob/0.png', 'bob/1.png'][which]
        with open(osp.join(root, name), 'wb') as f:
            f.write(img)
        got = self.read_all(
            lambda **kw: FaceImageFolder(root, pipeline=[], **kw),
            osp.join(root, name))
        self.assertIsNotNone(got)
        for i, sample in enumerate(got):
            if i != which:
                self.assertIsInstance(sample, dict)
                self.assertEqual(sample['gt_label'], i // 2)

    @FUZZ_DS
    @given(lines=st.lists(st.one_of(
        st.sampled_from(['alice/0.png 0', 'bob/1.png 1', '../x.png 0',
                         '/etc/passwd 1', 'alice/../../x.png 0', 'C:/x 0',
                         'alice/0.png 99999999999999999999', 'bob/0.png -1']),
        st.text(max_size=30), st.binary(max_size=30).map(
            lambda b: b.decode('latin1'))), max_size=5),
           enc=st.sampled_from(['utf-8', 'latin1']))
    def test_list_file(self, lines, enc):
        CASES['ds_folder_list'] += 1
        root = self._folder()
        lst = self.write('list.txt', '\n'.join(lines).encode(enc, 'replace'))
        got = self.read_all(
            lambda **kw: FaceImageFolder(root, ann_file=lst, pipeline=[], **kw),
            lst, root, skip=False)
        for sample in got or []:
            if isinstance(sample, dict):
                real = osp.realpath(sample['img_path'])
                self.assertTrue(real.startswith(osp.realpath(root) + os.sep),
                                f'read outside the data root: {real}')


class TestFuzzVerificationBinDataset(_DatasetFuzz):

    @FUZZ_DS
    @given(n=st.integers(1, 2), protocol=st.integers(0, 5),
           as_array=st.booleans(), muts=mutations,
           cut=st.one_of(st.none(), st.integers(0, 10**6)))
    def test_mutated(self, n, protocol, as_array, muts, cut):
        CASES['ds_bin_mutated'] += 1
        images = [np.frombuffer(_jpeg(i), np.uint8) if as_array else _jpeg(i)
                  for i in range(2 * n)]
        raw = pickle.dumps((images, [True] * n), protocol=protocol)
        path = self.write('v.bin', mutate(raw, muts, cut)[0])
        got = self.read_all(
            lambda **kw: VerificationBinDataset(path, pipeline=[], **kw), path)
        for sample in got or []:
            if isinstance(sample, dict):
                self.assertEqual(sample['img'].shape[2], 3)


class TestFuzzIJBDataset(_DatasetFuzz):

    def _folder(self):
        base = self.fresh()
        root = osp.join(base, 'IJBC')
        os.makedirs(osp.join(root, 'meta'))
        os.makedirs(osp.join(root, 'loose_crop'))
        tid, lmk = [], []
        for i in range(3):
            with open(osp.join(root, 'loose_crop', f'{i}.png'), 'wb') as f:
                f.write(_jpeg(i, 32))
            tid.append(f'{i}.png {i // 2 + 1} {10 + i}')
            lmk.append(f'{i}.png ' + ' '.join(['10.0'] * 10) + ' 0.9')
        meta = osp.join(root, 'meta')
        paths = [osp.join(meta, 'ijbc_face_tid_mid.txt'),
                 osp.join(meta, 'ijbc_name_5pts_score.txt')]
        for p, lines in zip(paths, (tid, lmk)):
            with open(p, 'w') as f:
                f.write('\n'.join(lines) + '\n')
        with open(osp.join(base, 'outside.png'), 'wb') as f:
            f.write(_jpeg(7, 32))
        return root, paths

    @FUZZ_DS
    @given(which=st.integers(0, 1), muts=mutations,
           name=st.one_of(st.none(), st.sampled_from(
               ['../outside.png', '/etc/hostname', 'x/../../outside.png',
                '..\\outside.png', '0.png\x00', '\xff.png'])))
    def test_mutated_meta(self, which, muts, name):
        CASES['ds_ijb_meta'] += 1
        root, paths = self._folder()
        path = paths[which]
        with open(path, 'rb') as f:
            raw = f.read()
        if name is not None:
            for p in paths:  # the same name in both files, as a real attack
                with open(p, 'rb') as f:
                    text = f.read()
                with open(p, 'wb') as f:
                    f.write(text.replace(b'1.png', name.encode('latin1'), 1))
        else:
            with open(path, 'wb') as f:
                f.write(mutate(raw, muts)[0])
        got = self.read_all(lambda **kw: IJBDataset(root, pipeline=[], **kw),
                            *paths, osp.join(root, 'loose_crop'))
        for sample in got or []:
            if isinstance(sample, dict):
                real = osp.realpath(sample['img_path'])
                self.assertTrue(real.startswith(osp.realpath(root) + os.sep),
                                f'read outside the data root: {real}')


class TestFuzzOcclusionLabels(_DatasetFuzz):

    @FUZZ_DS
    @given(lines=st.lists(st.one_of(
        st.sampled_from(['id0/a 0', 'id0/b 1', '../../x 0', '/abs 0',
                         'id0/a 1 2', 'id0/a nan']),
        st.binary(max_size=20).map(lambda b: b.decode('latin1'))),
        max_size=4), enc=st.sampled_from(['utf-8', 'latin1']),
        binary01=st.booleans())
    def test_labels_and_masks(self, lines, enc, binary01):
        CASES['ds_occlusion_labels'] += 1
        root = osp.join(self.fresh(), 'occ')
        mask = np.zeros((16, 16), np.uint8)
        mask[:8] = 1 if binary01 else 255
        for name in ('id0/a', 'id0/b'):
            write_occlusion_mask_sample(root, name, np.zeros((16, 16, 3),
                                                             np.uint8), mask)
        if binary01:  # store it 0/1 as a public generator would
            for name in ('a', 'b'):
                cv2.imwrite(osp.join(root, 'masks', 'id0', name + '.png'), mask)
        labels = osp.join(root, 'labels.txt')
        with open(labels, 'wb') as f:
            f.write('\n'.join(lines).encode(enc, 'replace'))
        got = self.read_all(
            lambda **kw: OcclusionMaskDataset(root, pipeline=[], **kw),
            labels, root)
        for sample in got or []:
            if isinstance(sample, dict):
                vis = sample['visibility_mask']
                np.testing.assert_array_equal(vis[:8], 1.0)
                np.testing.assert_array_equal(vis[8:], 0.0)


# --- IJB 1:N CSV ----------------------------------------------------------------------
class TestFuzz1NCSV(_FuzzCase):

    def _oracle(self, path):
        import csv
        with open(path, encoding='utf-8-sig', newline='') as f:
            rows = list(csv.reader(f))
        header = [h.strip().upper() for h in rows[0]]
        ti, si = header.index('TEMPLATE_ID'), header.index('SUBJECT_ID')
        out = {}
        for row in rows[1:]:
            if row:
                out.setdefault(int(row[ti]), int(row[si]))
        return list(out), list(out.values())

    @FUZZ
    @given(raw=st.one_of(
        st.binary(max_size=120),
        st.text(alphabet='0123456789,-\n\r"TEMPLAE_IDSUBJC x\xe9', max_size=120)
        .map(lambda t: ('TEMPLATE_ID,SUBJECT_ID\n' + t).encode('utf-8')),
        st.tuples(st.lists(st.tuples(st.integers(-2**70, 2**70),
                                     st.integers(0, 9)), max_size=5), mutations)
        .map(lambda t: mutate(('TEMPLATE_ID,SUBJECT_ID,FILE\n' + ''.join(
            f'{a},{b},f.jpg\n' for a, b in t[0])).encode(), t[1])[0])))
    @example(raw=b'TEMPLATE_ID,SUBJECT_ID\n1,\xff\n')
    def test_random(self, raw):
        CASES['ijb_1n_csv'] += 1
        path = self.write('g.csv', raw)
        try:
            with no_hang():
                tids, subj = read_1n_csv(path)
        except OAMLError as e:
            self.assertOurError(e, path)
            return
        t, s = self._oracle(path)
        np.testing.assert_array_equal(tids, t)
        np.testing.assert_array_equal(subj, s)


# --- gallery files --------------------------------------------------------------------
class TestFuzzGallery(_FuzzCase):

    @classmethod
    def setUpClass(cls):
        from oaml_mm.apis import FaceGallery, FaceRecognizer
        from tests.test_apis.helpers import (face, write_checkpoint,
                                             write_config)
        cls.ctmp = tempfile.TemporaryDirectory()
        cfg = write_config(osp.join(cls.ctmp.name, 'tiny.py'))
        ckpt = osp.join(cls.ctmp.name, 'tiny.pth')
        write_checkpoint(ckpt)
        cls.rec = FaceRecognizer(cfg, ckpt)
        g = FaceGallery(cls.rec)
        for i in range(3):
            g.enrol(f'id{i}', face(i), channel_order='rgb')
        cls.state = g.state()
        cls.FaceGallery = FaceGallery

    @classmethod
    def tearDownClass(cls):
        cls.ctmp.cleanup()

    def _load(self, path):
        try:
            with no_hang():
                return self.FaceGallery.load(path, self.rec)
        except OAMLError as e:
            self.assertOurError(e, path)
            return None

    def _check(self, g):
        self.assertEqual(len(set(g.names)), len(g.names))
        if g.names:
            self.assertTrue(torch.isfinite(g.acc.embeddings()).all())
            self.assertEqual(g.acc.emb_sum.shape[0], len(g.names))

    @FUZZ
    @given(field=st.sampled_from(['emb_dim', 'map_shape', 'names', 'weight',
                                  'count', 'emb_sum', 'map_mean', 'vis_sum']),
           value=st.one_of(
               st.integers(-2**62, 2**62), st.floats(), st.none(), st.text(max_size=4),
               st.lists(st.integers(-2**40, 2**40), max_size=4),
               st.lists(st.sampled_from(['id0', 'id1', 'id2', 'x', '']),
                        max_size=4),
               st.tuples(st.integers(0, 3), st.integers(0, 40),
                         st.sampled_from(['float32', 'float16', 'float64',
                                          'int64']),
                         st.sampled_from([0.0, 1.5, -1.0, float('nan'),
                                          float('inf')]))
               .map(lambda t: torch.full((t[0], t[1]), t[3],
                                         dtype=getattr(torch, t[2]))
                    if t[2] != 'int64' or np.isfinite(t[3]) else
                    torch.zeros(t[0], t[1], dtype=torch.int64))))
    @example(field='emb_dim', value=2**40)
    @example(field='emb_dim', value=-3)
    @example(field='names', value=['id0', 'id0', 'id1'])
    def test_crafted_fields(self, field, value):
        CASES['gallery_crafted'] += 1
        state = dict(self.state)
        state[field] = value
        path = osp.join(self.tmp.name, 'g.pt')
        torch.save(state, path)
        g = self._load(path)
        if g is not None:
            self._check(g)

    @FUZZ_DS
    @given(muts=mutations, cut=st.one_of(st.none(), st.integers(0, 10**6)))
    def test_mutated_file(self, muts, cut):
        CASES['gallery_mutated'] += 1
        path = osp.join(self.tmp.name, 'g.pt')
        torch.save(self.state, path)
        with open(path, 'rb') as f:
            raw = f.read()
        with open(path, 'wb') as f:
            f.write(mutate(raw, muts, cut)[0])
        g = self._load(path)
        if g is not None:
            self._check(g)


# --- config loader --------------------------------------------------------------------
BASE_CONFIG = b'''_base_ = ['./base.py']
model = dict(type='IResNet', depth=50, widths=[64, 128], name='ir')
optim = dict(lr=0.1, momentum=0.9)  # comment
steps = [12, 20, 24]
flag = True
'''


class TestFuzzConfigLoader(_FuzzCase):

    def setUp(self):
        super().setUp()
        self.write('base.py', b'base_value = 1\n')

    @FUZZ
    @given(muts=mutations, cut=st.one_of(st.none(), st.integers(0, 10**6)),
           raw=st.one_of(st.none(), st.binary(max_size=200)))
    @example(muts=[(0, 0)], cut=None, raw=b'x = (\n')
    @example(muts=[(0, 0)], cut=None, raw=b"_base_ = ['./missing.py']\n")
    @example(muts=[(0, 0)], cut=None, raw=b'x = undefined + 1\n')
    @example(muts=[(0, 0)], cut=None, raw=b'x = 1\n\xff\n')
    def test_config(self, muts, cut, raw):
        CASES['config'] += 1
        bad = raw if raw is not None else mutate(BASE_CONFIG, muts, cut)[0]
        path = self.write('cfg.py', bad)
        with no_hang():
            try:
                cfg = load_config(path)
            except ConfigError as e:
                self.assertOurError(e, path, osp.join(self.tmp.name, 'base.py'))
                return
        self.assertIsNotNone(cfg)
