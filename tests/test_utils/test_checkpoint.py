import collections
import io
import os
import os.path as osp
import pickle
import tempfile
import zipfile
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

    def test_crafted_type_markers_are_one_line(self):
        from oaml_mm.utils import TYPE_KEY
        crafted = {
            'ndarray without data': {TYPE_KEY: 'ndarray', 'dtype': '<f4'},
            'ndarray of object dtype': {TYPE_KEY: 'ndarray',
                                        'data': torch.zeros(2), 'dtype': '|O'},
            'string bomb': {TYPE_KEY: 'ndarray_str', 'items': ['a'],
                            'shape': [1], 'dtype': '<U1000000000'},
            'shape of another size': {TYPE_KEY: 'ndarray_str', 'items': ['a'],
                                      'shape': [10**9], 'dtype': '<U1'},
            'HistoryBuffer of text': {TYPE_KEY: 'HistoryBuffer',
                                      'log_history': 'x',
                                      'count_history': [], 'max_length': 2},
            'unhashable set item': {TYPE_KEY: 'set', 'items': [[1]]},
            'unknown kind': {TYPE_KEY: 'eval', 'code': 'print(1)'},
        }
        with tempfile.TemporaryDirectory() as tmp:
            for what, record in crafted.items():
                with self.subTest(what=what):
                    path = osp.join(tmp, 'crafted.pth')
                    torch.save({'meta': {'hub': record}}, path)
                    with self.assertRaisesRegex(
                            CheckpointError,
                            r'^\S*crafted\.pth: checkpoint\.meta\.hub: ') as ctx:
                        safe_load_checkpoint(path)
                    self.assertNotIn('\n', str(ctx.exception))

    def test_atomic_save_follows_symlinks_and_umask(self):
        with tempfile.TemporaryDirectory() as tmp:
            real = osp.join(tmp, 'real.pth')
            link = osp.join(tmp, 'link.pth')
            atomic_save({'v': 1}, real)
            os.symlink(real, link)
            old = os.umask(0o027)
            try:
                atomic_save({'v': 2}, link)
            finally:
                os.umask(old)
            self.assertTrue(osp.islink(link))
            self.assertEqual(safe_load_checkpoint(real)['v'], 2)
            self.assertEqual(os.stat(real).st_mode & 0o777, 0o640)

    def test_full_disk_is_one_line_and_keeps_the_file(self):
        import errno

        from oaml_mm.errors import OutputPathError
        with tempfile.TemporaryDirectory() as tmp:
            path = osp.join(tmp, 'ckpt.pth')
            atomic_save({'v': 1}, path)

            def full(obj, f):
                raise OSError(errno.ENOSPC, 'No space left on device')

            with self.assertRaisesRegex(
                    OutputPathError, r'ckpt\.pth: cannot write \(No space left '
                    r'on device\); nothing was written') as ctx:
                atomic_save({'v': 2}, path, saver=full)
            self.assertEqual(ctx.exception.errno, errno.ENOSPC)
            self.assertEqual(os.listdir(tmp), ['ckpt.pth'])


class TestResolveLastCheckpoint(TestCase):
    """Which file ``last_checkpoint`` means for the folder it sits in."""

    def test_own_file_first_outside_refused_inside_followed(self):
        from oaml_mm.utils.checkpoint import resolve_last_checkpoint
        with tempfile.TemporaryDirectory() as tmp:
            work, other = osp.join(tmp, 'work'), osp.join(tmp, 'other')
            os.makedirs(work)
            os.makedirs(other)
            self.assertEqual(resolve_last_checkpoint(work), (None, ''))
            torch.save({}, osp.join(other, 'iter_2.pth'))
            with open(osp.join(work, 'last_checkpoint'), 'w') as f:
                f.write(osp.join(other, 'iter_2.pth'))
            path, note = resolve_last_checkpoint(work)
            self.assertIsNone(path)
            self.assertIn('lies outside this work dir', note)
            torch.save({}, osp.join(work, 'iter_2.pth'))
            self.assertEqual(resolve_last_checkpoint(work),
                             (osp.join(work, 'iter_2.pth'), ''))
            # Reached through a symbolic link: still inside.
            alias = osp.join(tmp, 'alias')
            os.symlink(work, alias)
            with open(osp.join(work, 'last_checkpoint'), 'w') as f:
                f.write(osp.join(work, 'iter_9.pth'))
            self.assertEqual(resolve_last_checkpoint(alias),
                             (osp.join(work, 'iter_9.pth'), ''))


def _zip_checkpoint(path: str, raw: bytes) -> str:
    """A torch zip checkpoint whose data.pkl is ``raw`` (a hand-made pickle)."""
    torch.save({'x': 1}, path)
    with zipfile.ZipFile(path) as z:
        members = [(info, z.read(info.filename)) for info in z.infolist()]
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as z:
        for info, data in members:
            z.writestr(info.filename,
                       raw if info.filename.endswith('/data.pkl') else data)
    return path


def _stock_mmengine_checkpoint(work: str) -> str:
    """One epoch of the toy model under a plain mmengine Runner."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    from tests.toy_components import toy_config
    cfg = toy_config(work, max_epochs=1)
    cfg.pop('runner_type')
    cfg['default_hooks']['checkpoint']['type'] = 'mmengine.CheckpointHook'
    Runner.from_cfg(Config(cfg)).train()
    return osp.join(work, 'epoch_1.pth')


class TestStockMmengineCheckpoint(TestCase):
    """Files mmengine writes without our encoding: numpy, HistoryBuffer, dtypes."""

    def test_numpy_values_and_history_buffer_load_as_data(self):
        buf = HistoryBuffer(max_length=5)
        for v in (1.0, 2.0, 4.0):
            buf.update(v, 2)
        obj = {
            'f4': np.arange(6, dtype=np.float32).reshape(2, 3),
            'fortran': np.asfortranarray(
                np.arange(6, dtype=np.int16).reshape(2, 3)),
            'big_endian': np.arange(3, dtype='>i4'),
            'text': np.array(['ab', 'c']),
            'objects': np.array(['x', 1], dtype=object),
            'flags': np.array([True, False]),
            'empty': np.zeros((0, 4)),
            'f64': np.float64(2.5),
            'i64': np.int64(-7),
            'dtype': np.dtype('float16'),
            'buffer': buf,
        }
        with tempfile.TemporaryDirectory() as tmp:
            path = osp.join(tmp, 'np.pth')
            torch.save(obj, path)
            with self.assertRaises(pickle.UnpicklingError):
                torch.load(path, weights_only=True)  # really refused by torch
            out = safe_load_checkpoint(path)
        for key in ('f4', 'fortran', 'big_endian', 'text', 'objects', 'flags',
                    'empty'):
            np.testing.assert_array_equal(out[key], obj[key])
            self.assertEqual(out[key].dtype, obj[key].dtype, key)
            self.assertEqual(out[key].shape, obj[key].shape, key)
        self.assertEqual(out['f64'], 2.5)
        self.assertEqual(out['i64'], -7)
        self.assertEqual(out['dtype'], np.dtype('float16'))
        self.assertIsInstance(out['buffer'], HistoryBuffer)
        self.assertEqual(out['buffer'].max_length, 5)
        self.assertAlmostEqual(out["buffer"].mean(), 7.0 / 6)
        self.assertEqual(out['buffer'].current(), 4.0)
        np.testing.assert_array_equal(out['buffer'].data[1], [2, 2, 2])

    def test_stock_runner_checkpoint_loads_and_resumes(self):
        from mmengine.config import Config

        from oaml_mm.registry import RUNNERS
        from tests.toy_components import toy_config
        with tempfile.TemporaryDirectory() as tmp:
            stock = _stock_mmengine_checkpoint(osp.join(tmp, 'stock'))
            with self.assertRaises(pickle.UnpicklingError):
                torch.load(stock, weights_only=True)
            ckpt = safe_load_checkpoint(stock)
            loss = ckpt['message_hub']['log_scalars']['train/loss']
            self.assertIsInstance(loss, HistoryBuffer)
            self.assertEqual(len(loss.data[0]), 6)
            self.assertEqual(ckpt['meta']['epoch'], 1)
            cfg = toy_config(osp.join(tmp, 'resumed'), max_epochs=2)
            cfg.update(resume=True, load_from=stock)
            runner = RUNNERS.build(Config(cfg))
            runner.train()
            self.assertEqual(runner.epoch, 2)
            self.assertEqual(runner.iter, 12)

    def test_admitted_names_cannot_be_abused(self):
        proto = b'\x80\x02'
        nd = b'cnumpy\nndarray\n'
        cases = {
            # getattr is admitted only as getattr(HistoryBuffer, 'statistic').
            'builtins.getattr': proto + b'c__builtin__\ngetattr\n' + nd +
            b'X\x06\x00\x00\x00tofile\x86R.',
            'posix.system': proto + b'c__builtin__\ngetattr\nc' +
            b'posix\nsystem\nX\x03\x00\x00\x00foo\x86R.',
            '_reconstruct': proto + b'cnumpy._core.multiarray\n_reconstruct\n'
            b'ccollections\nOrderedDict\nK\x00\x85X\x01\x00\x00\x00b\x87R.',
            'numpy.ndarray': proto + nd + b')\x81.',
            'numpy.dtype': proto + b'cnumpy\ndtype\nX\x02\x00\x00\x00V8\x85R.',
        }
        with tempfile.TemporaryDirectory() as tmp:
            for name, raw in cases.items():
                with self.subTest(name):
                    path = _zip_checkpoint(osp.join(tmp, 'x.pth'), raw)
                    with self.assertRaises(UnsafeCheckpointError) as ctx:
                        safe_load_checkpoint(path)
                    msg = str(ctx.exception)
                    self.assertIn(name, msg)
                    self.assertNotIn('\x1b', msg)
                    self.assertNotIn('\n', msg)
                    self.assertIn('To convert it, save it again where it '
                                  'was made', msg)
            # An array whose header claims 2^40 elements but the file holds 8
            # bytes: refused before anything is allocated.
            raw = (proto + b'cnumpy._core.multiarray\n_reconstruct\n' + nd +
                   b'K\x00\x85X\x01\x00\x00\x00b\x87R(K\x01\x8a\x06\x00\x00'
                   b'\x00\x00\x00\x01\x85cnumpy\ndtype\nX\x02\x00\x00\x00f8'
                   b'\x89\x88\x87R\x89c_codecs\nencode\nX\x08\x00\x00\x00'
                   + b'\x00' * 8 + b'X\x06\x00\x00\x00latin1\x86Rtb.')
            path = _zip_checkpoint(osp.join(tmp, 'big.pth'), raw)
            with self.assertRaisesRegex(CheckpointError,
                                        'needs 8796093022208 bytes, the '
                                        'file holds 8'):
                safe_load_checkpoint(path)


class TestNoWeightsOnlyOverride(TestCase):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 must not reach any load path."""

    def test_every_mmengine_load_path_stays_weights_only(self):
        from unittest import mock

        from mmengine.runner.checkpoint import (_load_checkpoint,
                                                load_checkpoint)

        from tests.toy_components import ToyClassifier
        with tempfile.TemporaryDirectory() as tmp:
            marker = osp.join(tmp, 'pwned')
            path = osp.join(tmp, 'evil.pth')
            torch.save({'state_dict': {}, 'meta': _Payload(marker)}, path)
            legacy = osp.join(tmp, 'evil_legacy.pth')
            with open(legacy, 'wb') as f:
                pickle.dump({'state_dict': _Payload(marker)}, f)
            model = ToyClassifier()
            model.init_cfg = dict(type='Pretrained', checkpoint=path)
            calls = {
                '_load_checkpoint': lambda: _load_checkpoint(path),
                'load_checkpoint': lambda: load_checkpoint(model, path),
                'init_cfg Pretrained': model.init_weights,
                'safe_load_checkpoint': lambda: safe_load_checkpoint(path),
                'legacy pickle': lambda: _load_checkpoint(legacy),
            }
            with mock.patch.dict(os.environ,
                                 {'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD': '1'}):
                for name, call in calls.items():
                    with self.subTest(name):
                        with self.assertRaisesRegex(UnsafeCheckpointError,
                                                    'posix.system'):
                            call()
            self.assertFalse(osp.exists(marker))
