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


if __name__ == '__main__':
    unittest.main()
