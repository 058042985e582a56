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
from collections import Counter
from contextlib import contextmanager
from unittest import TestCase

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from oaml_mm.datasets import (IndexedRecordReader, IRHeader, pack_record,
                              read_ijb_landmarks, read_ijb_template_pairs,
                              read_ijb_tid_mid, unpack_record)
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
def no_hang(seconds: int = 10):
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


# --- MXNet RecordIO ----------------------------------------------------------------
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


# --- IJB meta files ---------------------------------------------------------------------
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
        """The oracle: plain Python over universal-newline text lines."""
        with open(path, encoding='utf-8', newline=None) as f:
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


# --- occlusion masks ------------------------------------------------------------------------
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


# --- config loader ----------------------------------------------------------------------------
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
