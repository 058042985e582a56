import collections
import io
import os
import os.path as osp
import pickle
import tempfile
from unittest import TestCase

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from oaml_mm.errors import CheckpointError, UnsafeCheckpointError
from oaml_mm.utils import (atomic_save, from_weights_only,
                           safe_load_checkpoint, to_weights_only)


class _Payload:
    """Unpickling this calls os.system: the classic malicious checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


class TestWeightsOnlyEncoding(TestCase):

    def test_round_trip(self):
        buf = HistoryBuffer()
        buf.update(1.5, 2)
        buf.update(3.0)
        ckpt = {
            'meta': {
                'seed': np.int64(3),
                'lr': np.float32(0.5),
                'eta': np.float64(2.5),  # a float subclass
                'arr': np.arange(6, dtype=np.int16).reshape(2, 3),
                'names': np.array(['a', 'bc']),
                'tags': {1, 2},
            },
            'message_hub': {
                'log_scalars': collections.OrderedDict(loss=buf)
            },
            'state_dict': collections.OrderedDict(w=torch.ones(2)),
        }
        enc = to_weights_only(ckpt)
        f = io.BytesIO()
        torch.save(enc, f)
        f.seek(0)
        dec = from_weights_only(torch.load(f, weights_only=True))
        self.assertEqual(dec['meta']['seed'], 3)
        self.assertIsInstance(dec['meta']['seed'], int)
        self.assertAlmostEqual(dec['meta']['lr'], 0.5)
        self.assertIs(type(dec['meta']['eta']), float)
        np.testing.assert_array_equal(dec['meta']['arr'], ckpt['meta']['arr'])
        self.assertEqual(dec['meta']['arr'].dtype, np.int16)
        np.testing.assert_array_equal(dec['meta']['names'], ['a', 'bc'])
        self.assertEqual(dec['meta']['tags'], {1, 2})
        hb = dec['message_hub']['log_scalars']['loss']
        self.assertIsInstance(hb, HistoryBuffer)
        self.assertAlmostEqual(hb.mean(), buf.mean())
        self.assertEqual(hb.current(), 3.0)
        np.testing.assert_array_equal(hb.data[1], [2, 1])
        self.assertTrue(torch.equal(dec['state_dict']['w'], torch.ones(2)))

    def test_unknown_object_becomes_repr(self):
        with self.assertWarnsRegex(UserWarning, r'checkpoint\.x'):
            enc = to_weights_only({'x': object()})
        self.assertIsInstance(enc['x'], str)


class TestSafeLoad(TestCase):

    def test_malicious_payload_is_refused_not_executed(self):
        with tempfile.TemporaryDirectory() as tmp:
            marker = osp.join(tmp, 'pwned')
            path = osp.join(tmp, 'evil.pth')
            with open(path, 'wb') as f:
                pickle.dump({'state_dict': _Payload(marker)}, f)
            with self.assertRaises(UnsafeCheckpointError) as cm:
                safe_load_checkpoint(path)
            self.assertIn('evil.pth', str(cm.exception))
            self.assertFalse(osp.exists(marker))
            # torch-format container with the payload inside: refused as well.
            path2 = osp.join(tmp, 'evil2.pth')
            torch.save({'x': _Payload(marker)}, path2)
            with self.assertRaises(UnsafeCheckpointError):
                safe_load_checkpoint(path2)
            self.assertFalse(osp.exists(marker))

    def test_missing_and_truncated(self):
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaises(CheckpointError):
                safe_load_checkpoint(osp.join(tmp, 'nope.pth'))
            path = osp.join(tmp, 'ok.pth')
            atomic_save({'w': torch.arange(1000.)}, path)
            with open(path, 'rb') as f:
                data = f.read()
            with open(path, 'wb') as f:
                f.write(data[:len(data) // 2])
            with self.assertRaises(CheckpointError):
                safe_load_checkpoint(path)

    def test_atomic_save_keeps_old_file_on_failure(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = osp.join(tmp, 'ckpt.pth')
            atomic_save({'v': 1}, path)

            def failing_saver(obj, f):
                f.write(b'partial')
                raise OSError('disk full')

            with self.assertRaises(OSError):
                atomic_save({'v': 2}, path, saver=failing_saver)
            self.assertEqual(safe_load_checkpoint(path)['v'], 1)
            self.assertEqual(os.listdir(tmp), ['ckpt.pth'])
