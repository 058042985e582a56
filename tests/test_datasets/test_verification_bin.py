"""Verification .bin files: round trip, legacy pickles and malicious pickles."""
import os
import os.path as osp
import pickle
import tempfile
import unittest

import numpy as np

from oaml_mm.datasets.verification_bin import (load_verification_bin,
                                               write_verification_bin)
from oaml_mm.errors import DataFormatError, MissingFileError


class _Evil:

    def __reduce__(self):
        return (os.system, ('touch PWNED_MARKER',))


class TestVerificationBin(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.path = osp.join(self.tmp.name, 'lfw.bin')

    def tearDown(self):
        self.tmp.cleanup()

    def test_round_trip(self):
        write_verification_bin(self.path, [b'a', b'b', b'c', b'd'], [True, False])
        images, issame = load_verification_bin(self.path)
        self.assertEqual(images, [b'a', b'b', b'c', b'd'])
        self.assertEqual(issame, [True, False])

    def test_legacy_protocol2_with_numpy_bool(self):
        with open(self.path, 'wb') as f:
            pickle.dump(([b'ab', b'', b'x\xff', b'y'],
                         [np.bool_(True), np.bool_(False)]), f, protocol=2)
        images, issame = load_verification_bin(self.path)
        self.assertEqual(images, [b'ab', b'', b'x\xff', b'y'])
        self.assertEqual(issame, [True, False])
        self.assertIsInstance(issame[0], bool)

    def test_python2_byte_strings(self):
        # What Python 2 wrote for (['ab', 'cd'], [True]) at protocol 2.
        raw = (b'\x80\x02]q\x00(U\x02abq\x01U\x02cdq\x02e]q\x03\x88a\x86q\x04.')
        with open(self.path, 'wb') as f:
            f.write(raw)
        self.assertEqual(load_verification_bin(self.path),
                         ([b'ab', b'cd'], [True]))

    def test_malicious_pickle_refused(self):
        marker = osp.join(os.getcwd(), 'PWNED_MARKER')
        with open(self.path, 'wb') as f:
            pickle.dump(([_Evil(), b'b'], [True]), f)
        with self.assertRaisesRegex(DataFormatError, 'posix.system|os.system'):
            load_verification_bin(self.path)
        self.assertFalse(osp.exists(marker))

    def test_numpy_object_dtype_refused(self):
        # An object array would let the pickle place any object (and call its
        # reduction): only plain numeric dtypes are rebuilt.
        for proto in (2, 4, 5):
            with open(self.path, 'wb') as f:
                pickle.dump(([np.array([b'a'], dtype=object), b'b'], [True]), f,
                            protocol=proto)
            with self.assertRaisesRegex(DataFormatError, "dtype 'O8' is not admitted"):
                load_verification_bin(self.path)
        # A numpy integer flag 0/1 is as good as a Python int.
        with open(self.path, 'wb') as f:
            pickle.dump(([b'a', b'b'], [np.int64(1)]), f, protocol=2)
        self.assertEqual(load_verification_bin(self.path), ([b'a', b'b'], [True]))

    def test_count_mismatch_and_types(self):
        with open(self.path, 'wb') as f:
            pickle.dump(([b'a', b'b', b'c'], [True]), f)
        with self.assertRaisesRegex(DataFormatError, '3 images for 1 pairs'):
            load_verification_bin(self.path)
        with open(self.path, 'wb') as f:
            pickle.dump(([b'a', 'b'], [True]), f)
        with self.assertRaisesRegex(DataFormatError, 'image 1'):
            load_verification_bin(self.path)
        with open(self.path, 'wb') as f:
            f.write(b'not a pickle')
        with self.assertRaises(DataFormatError):
            load_verification_bin(self.path)
        with self.assertRaises(MissingFileError):
            load_verification_bin(osp.join(self.tmp.name, 'none.bin'))
        with self.assertRaises(ValueError):
            write_verification_bin(self.path, [b'a'], [True])


def numpy1_pickle(raw: bytes) -> bytes:
    """The same pickle as numpy 1.x writes it (``numpy.core`` module paths).

    numpy 2 cannot write these names; protocol >= 4 strings carry a length byte,
    and the (optional) FRAME opcode is dropped as its length changes.
    """
    if raw[2:3] == b'\x95':
        raw = raw[:2] + raw[11:]
    for mod in (b'multiarray', b'numeric'):
        old, new = b'numpy._core.' + mod, b'numpy.core.' + mod
        raw = raw.replace(bytes([0x8c, len(old)]) + old,
                          bytes([0x8c, len(new)]) + new)
        raw = raw.replace(old + b'\n', new + b'\n')
    assert b'numpy._core' not in raw
    return raw


class TestHomeMadePackers(unittest.TestCase):
    """Images as ``cv2.imencode`` arrays, any protocol, numpy 1.x/2.x (issue 14.1)."""

    def setUp(self):
        import cv2
        self.tmp = tempfile.TemporaryDirectory()
        self.path = osp.join(self.tmp.name, 'agedb_30.bin')
        rng = np.random.RandomState(0)
        self.arrays = [cv2.imencode('.jpg', rng.randint(0, 255, (16, 16, 3),
                                                        np.uint8))[1]
                       for _ in range(4)]
        self.jpegs = [a.tobytes() for a in self.arrays]

    def tearDown(self):
        self.tmp.cleanup()

    def _load(self, raw):
        with open(self.path, 'wb') as f:
            f.write(raw)
        return load_verification_bin(self.path)

    def test_imencode_arrays_every_protocol_and_numpy_version(self):
        issames = ([True, False], np.array([True, False]),
                   [np.bool_(True), np.bool_(False)])
        for proto in range(pickle.HIGHEST_PROTOCOL + 1):
            for issame in issames:
                raw = pickle.dumps((self.arrays, issame), protocol=proto)
                for name, data in (('numpy2', raw), ('numpy1', numpy1_pickle(raw))):
                    with self.subTest(protocol=proto, numpy=name,
                                      issame=type(issame).__name__):
                        images, flags = self._load(data)
                        self.assertEqual(images, self.jpegs)
                        self.assertEqual(flags, [True, False])
                        self.assertTrue(all(type(f) is bool for f in flags))

    def test_column_arrays_and_dataset_decode(self):
        # Older OpenCV returns [N, 1] arrays; the data set decodes them.
        from oaml_mm.datasets import VerificationBinDataset
        raw = pickle.dumps(([a.reshape(-1, 1) for a in self.arrays], [1, 0]),
                           protocol=pickle.HIGHEST_PROTOCOL)
        images, _ = self._load(raw)
        self.assertEqual(images, self.jpegs)
        ds = VerificationBinDataset(self.path)
        self.assertEqual(ds[3]['img'].shape, (16, 16, 3))

    def test_non_image_arrays_refused(self):
        for bad in (np.zeros(4, np.float32), np.zeros((2, 3), np.uint8)):
            raw = pickle.dumps(([bad, b'x'], [True]), protocol=4)
            with self.assertRaisesRegex(DataFormatError,
                                        r'record image 0.*1-D uint8'):
                self._load(raw)
        # A crafted array whose shape needs more bytes than the file holds.
        raw = pickle.dumps(([self.arrays[0], b'x'], [True]), protocol=2)
        n = self.arrays[0].size
        # BININT2 (M) holds the length n in the protocol-2 shape tuple.
        bad = raw.replace(b'M' + n.to_bytes(2, 'little') + b'\x85',
                          b'M\xff\xff\x85', 1)
        self.assertNotEqual(bad, raw)
        with self.assertRaisesRegex(DataFormatError, 'needs 65535 bytes'):
            self._load(bad)

    def test_one_image_referenced_many_times_stays_file_sized(self):
        # A 160 KiB file listing one image 2**16 times once allocated 2**16
        # copies (a 6 MiB file: 2 TiB); shared objects are now stored once.
        from oaml_mm.datasets import VerificationBinDataset
        for img in (self.jpegs[0], bytearray(self.jpegs[0]), self.arrays[0]):
            raw = pickle.dumps(([img] * 2**16, [True] * 2**15), protocol=5)
            self.assertLess(len(raw), 2**16 * 4)
            images, _ = self._load(raw)
            self.assertEqual(len({id(b) for b in images}), 1)
            ds = VerificationBinDataset(self.path)
            self.assertEqual(len(ds), 2**16)
            self.assertLessEqual(ds._blob.size, osp.getsize(self.path))
            self.assertEqual(ds._blob.size, len(self.jpegs[0]))


if __name__ == '__main__':
    unittest.main()
