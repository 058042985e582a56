"""Decoded .bin cache: same pixels, built once, invalidated, safe under processes."""
import glob
import multiprocessing as mp
import os
import os.path as osp
import tempfile
import unittest
import warnings

import numpy as np

from oaml_mm.datasets import VerificationBinDataset, write_verification_bin
from oaml_mm.datasets.bin_cache import bin_cache_path, bin_fingerprint
from oaml_mm.errors import DataFormatError
from tests.test_datasets.helpers import encode, make_face


def _write(path, n_pairs=4, shift=0, sizes=None):
    imgs = [encode(make_face(i + shift, i, size=(sizes or {}).get(i, 32)))
            for i in range(2 * n_pairs)]
    write_verification_bin(path, imgs, [i % 2 == 0 for i in range(n_pairs)])


def _pixels(ds):
    return np.stack([ds[i]['inputs'].numpy() for i in range(len(ds))])


def _open_in_child(path, out):
    ds = VerificationBinDataset(ann_file=path, decoded_cache=True,
                                pipeline=[dict(type='PackFaceInputs')])
    out.put(int(_pixels(ds).sum()))


class TestBinCache(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.path = osp.join(self.tmp.name, 'lfw.bin')
        _write(self.path)

    def tearDown(self):
        self.tmp.cleanup()

    def _ds(self, **kw):
        return VerificationBinDataset(ann_file=self.path,
                                      pipeline=[dict(type='PackFaceInputs')],
                                      **kw)

    def _caches(self, folder=None):
        return glob.glob(osp.join(folder or self.tmp.name, '*.u8.npy'))

    def test_same_pixels_as_decoding(self):
        plain = _pixels(self._ds())
        cached_ds = self._ds(decoded_cache=True)
        self.assertEqual(len(self._caches()), 1)
        self.assertEqual(cached_ds._decoded.shape, (8, 32, 32, 3))
        np.testing.assert_array_equal(_pixels(cached_ds), plain)
        # a second data set reads the file, it does not rebuild it
        mtime = os.stat(self._caches()[0]).st_mtime_ns
        np.testing.assert_array_equal(_pixels(self._ds(decoded_cache=True)),
                                      plain)
        self.assertEqual(os.stat(self._caches()[0]).st_mtime_ns, mtime)

    def test_changed_bin_invalidates(self):
        old_fp = bin_fingerprint(self.path)
        self._ds(decoded_cache=True)
        _write(self.path, shift=50)  # new content (and size/mtime)
        self.assertNotEqual(bin_fingerprint(self.path), old_fp)
        ds = self._ds(decoded_cache=True)
        np.testing.assert_array_equal(_pixels(ds), _pixels(self._ds()))
        caches = self._caches()
        self.assertEqual(len(caches), 1)  # the stale one was removed
        self.assertIn(bin_fingerprint(self.path), caches[0])

    def test_same_size_rewrite_changes_fingerprint(self):
        fp = bin_fingerprint(self.path)
        with open(self.path, 'r+b') as f:
            head = f.read(40)
            f.seek(0)
            f.write(head[:39] + bytes([head[39] ^ 1]))
        st = os.stat(self.path)
        os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns))
        self.assertNotEqual(bin_fingerprint(self.path), fp)

    def test_same_size_and_time_rewrite_deep_inside_rebuilds(self):
        # Only the first 64 KiB, the size and the time stamp once made the
        # fingerprint: a changed image further in was served from the stale
        # cache.
        imgs = [encode(make_face(i, i, size=48)) for i in range(80)]
        issame = [i % 2 == 0 for i in range(40)]
        write_verification_bin(self.path, imgs, issame)
        old = _pixels(self._ds(decoded_cache=True))
        st = os.stat(self.path)
        self.assertGreater(st.st_size, 80 * 1024)  # both beyond 64 KiB
        # The last two images swapped: same bytes, same size, same time stamp.
        write_verification_bin(self.path, imgs[:78] + [imgs[79], imgs[78]],
                               issame)
        os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns))
        self.assertEqual(os.stat(self.path).st_size, st.st_size)
        new = _pixels(self._ds(decoded_cache=True))
        np.testing.assert_array_equal(new, _pixels(self._ds()))
        np.testing.assert_array_equal(new[78], old[79])
        self.assertFalse(np.array_equal(new[78], old[78]))
        self.assertEqual(len(self._caches()), 1)

    def test_zeroed_cache_never_served(self):
        plain = _pixels(self._ds())
        self._ds(decoded_cache=True)
        cache = self._caches()[0]
        arr = np.load(cache, mmap_mode='r+')
        arr[2] = 0  # e.g. a block lost on disk
        arr.flush()
        del arr
        ds = self._ds(decoded_cache=True)
        with self.assertWarnsRegex(UserWarning, 'does not match its checksum'):
            got = _pixels(ds)
        np.testing.assert_array_equal(got, plain)
        self.assertEqual(self._caches(), [])  # deleted: the next open rebuilds
        np.testing.assert_array_equal(_pixels(self._ds(decoded_cache=True)),
                                      plain)
        self.assertEqual(len(self._caches()), 1)

    def test_damaged_cache_file_rebuilt(self):
        plain = _pixels(self._ds())
        self._ds(decoded_cache=True)
        cache = self._caches()[0]
        for damage in (lambda f: f.truncate(200), lambda f: f.write(b'junk')):
            with open(cache, 'r+b') as f:
                damage(f)
            with self.assertWarnsRegex(UserWarning, 'rebuilding'):
                ds = self._ds(decoded_cache=True)
            self.assertIsNotNone(ds._decoded)
            np.testing.assert_array_equal(_pixels(ds), plain)

    def test_bomb_image_under_skip_one_line(self):
        from tests.test_datasets.helpers import huge_header_png
        imgs = [encode(make_face(i, i)) for i in range(4)]
        imgs[3] = huge_header_png(20000, 20000)
        write_verification_bin(self.path, imgs, [True, False])
        for cached in (False, True):
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                ds = self._ds(decoded_cache=cached, on_bad_image='skip')
                self.assertEqual(ds[2]['inputs'].shape, (3, 32, 32))
                with self.assertRaisesRegex(
                        DataFormatError, r"lfw.bin, record image 3: image 3 "
                        r"was skipped under on_bad_image='skip' "
                        r'\(.*header claims 20000x20000 pixels.*\), but an '
                        'evaluation set'):
                    ds[3]
            self.assertEqual(ds.num_skipped(), 1)

    def test_cache_dir(self):
        other = osp.join(self.tmp.name, 'cache')
        os.makedirs(other)
        ds = self._ds(decoded_cache=True, cache_dir=other)
        self.assertEqual(len(self._caches(other)), 1)
        self.assertEqual(self._caches(), [])
        self.assertTrue(bin_cache_path(self.path, other).startswith(other))
        np.testing.assert_array_equal(_pixels(ds), _pixels(self._ds()))

    def test_falls_back_with_warning(self):
        _write(self.path, sizes={3: 40})  # two image sizes: no array fits
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            ds = self._ds(decoded_cache=True)
        self.assertIsNone(ds._decoded)
        self.assertTrue(any('no decoded cache' in str(x.message) for x in w))
        self.assertEqual(ds[3]['inputs'].shape[-1], 40)
        self.assertEqual(self._caches(), [])
        self.assertEqual(glob.glob(osp.join(self.tmp.name, '*.tmp')), [])

    def test_undecodable_image_falls_back(self):
        imgs = [encode(make_face(i, i)) for i in range(4)]
        imgs[2] = b'not a jpeg'
        write_verification_bin(self.path, imgs, [True, False])
        with self.assertWarns(UserWarning):
            ds = self._ds(decoded_cache=True)
        self.assertIsNone(ds._decoded)
        self.assertEqual(self._caches(), [])
        with self.assertRaises(DataFormatError):  # the usual bad-image policy
            ds[2]
        self.assertEqual(ds[1]['inputs'].shape, (3, 32, 32))

    def test_processes_build_once(self):
        ctx = mp.get_context('spawn')
        out = ctx.Queue()
        procs = [ctx.Process(target=_open_in_child, args=(self.path, out))
                 for _ in range(2)]
        for p in procs:
            p.start()
        sums = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
            self.assertEqual(p.exitcode, 0)
        self.assertEqual(len(set(sums)), 1)
        self.assertEqual(sums[0], int(_pixels(self._ds()).sum()))
        self.assertEqual(len(self._caches()), 1)
        self.assertEqual(glob.glob(osp.join(self.tmp.name, '*.tmp')), [])


if __name__ == '__main__':
    unittest.main()
