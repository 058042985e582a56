"""Decode a verification ``.bin`` once into a memory-mapped uint8 array beside it.

Validating on the five insightface ``.bin`` sets every epoch decodes the same ~60,000
JPEGs every time (``docs/datasets.md``, "Fast validation files"). The decoded images
of one ``.bin`` fit one ``[N, H, W, 3]`` uint8 ``.npy`` file (451 MB for LFW's 12,000
images at 112x112); opened with ``mmap_mode='r'`` it is shared by every DataLoader
worker and every rank of the machine through the page cache, and a sample is one
copy of 37 KB instead of a JPEG decode.

Invalidation: the cache file's name carries a fingerprint of the ``.bin``'s whole
content (its size and a BLAKE2b digest of every byte: 0.56 s for 200 MiB on a busy
2-core CPU, once per process and file), so a
changed ``.bin`` has another cache name even when its size and time stamp were
kept, and the stale file is deleted once the new one exists. A cache file is
complete whenever it exists: it is written to a temporary file in the same folder
and renamed (atomic on POSIX), under a ``filelock`` lock so that several ranks or
processes build it once.

Validation: beside the cache lies ``<cache>.crc.npy``, one CRC-32 per decoded
image, written before the cache is renamed into place. Every read checks its
image's CRC (20 us for a 112x112 image, against several hundred for a JPEG
decode): a damaged or zeroed image is never
served, the image is decoded from the ``.bin`` instead, and the damaged cache is
deleted so that the next open rebuilds it. A cache file that cannot be opened
(cut, not an array, of another shape) is rebuilt, not reported as a numpy error.
"""
import glob
import hashlib
import os
import os.path as osp
import tempfile
import threading
import warnings
import zlib
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from filelock import FileLock

from oaml_mm.errors import DataFormatError

__all__ = [
    'bin_fingerprint', 'bin_cache_path', 'open_bin_cache', 'DecodedBinCache'
]

_CHUNK = 1 << 20
_SUFFIX = '.u8.npy'
_CRC_SUFFIX = '.crc.npy'
# (path, size, mtime, ctime, inode) -> digest: a rewrite changes ctime (which no
# tool can set back), so the memo never answers for changed content.
_DIGESTS: Dict[Tuple, str] = {}
_LOCK = threading.Lock()


def bin_fingerprint(bin_path: str) -> str:
    """16 hex digits from the file's size and a BLAKE2b digest of all its bytes.

    Computed once per process for an unchanged file (size, time stamps and inode
    the same).

    Raises:
        FileNotFoundError: ``bin_path`` does not exist.
    """
    st = os.stat(bin_path)
    key = (osp.realpath(bin_path), st.st_size, st.st_mtime_ns, st.st_ctime_ns,
           st.st_ino)
    with _LOCK:
        if key in _DIGESTS:
            return _DIGESTS[key]
    h = hashlib.blake2b(f'{st.st_size}:'.encode(), digest_size=8)
    with open(bin_path, 'rb') as f:
        for chunk in iter(lambda: f.read(_CHUNK), b''):
            h.update(chunk)
    digest = h.hexdigest()
    with _LOCK:
        _DIGESTS[key] = digest
    return digest


def bin_cache_path(bin_path: str, cache_dir: Optional[str] = None) -> str:
    """``<cache_dir or the .bin's folder>/<name>.<fingerprint>.u8.npy``.

    With ``cache_dir`` the name also carries a hash of the ``.bin``'s absolute path,
    so ``.bin`` files of one name in different folders do not collide.
    """
    name = osp.basename(bin_path)
    if cache_dir is not None:
        tag = hashlib.sha1(osp.abspath(bin_path).encode()).hexdigest()[:8]
        name = f'{name}.{tag}'
    folder = cache_dir if cache_dir is not None else osp.dirname(bin_path)
    return osp.join(folder, f'{name}.{bin_fingerprint(bin_path)}{_SUFFIX}')


def _crc(img: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(img).data) & 0xffffffff


def _build(path: str, num: int, decode: Callable[[int], np.ndarray]) -> None:
    first = decode(0)
    shape = (num, ) + first.shape
    tmps = []
    for target in (path, path + _CRC_SUFFIX):
        fd, tmp = tempfile.mkstemp(dir=osp.dirname(path) or '.',
                                   prefix=osp.basename(target) + '.',
                                   suffix='.tmp')
        os.close(fd)
        tmps.append(tmp)
    try:
        arr = np.lib.format.open_memmap(tmps[0], mode='w+', dtype=np.uint8,
                                        shape=shape)
        crcs = np.zeros(num, np.uint32)
        arr[0] = first
        crcs[0] = _crc(first)
        for i in range(1, num):
            img = decode(i)
            if img.shape != first.shape:
                raise DataFormatError(
                    path, f'image {i} is {img.shape}, image 0 {first.shape}; '
                    'the decoded cache needs one image size', record=i)
            arr[i] = img
            crcs[i] = _crc(img)
        arr.flush()
        del arr
        with open(tmps[1], 'wb') as f:  # a name: np.save would append .npy
            np.save(f, crcs, allow_pickle=False)
        os.replace(tmps[1], path + _CRC_SUFFIX)
        os.replace(tmps[0], path)  # last: the cache exists only when complete
    finally:
        for tmp in tmps:
            if osp.exists(tmp):
                os.remove(tmp)


def _remove(path: str) -> None:
    for f in (path, path + _CRC_SUFFIX):
        try:
            os.remove(f)
        except FileNotFoundError:
            pass


class DecodedBinCache:
    """Read-only decoded images of a ``.bin``, each checked against its CRC-32.

    Args:
        path (str): The cache file.
        images (np.ndarray): Its memory-mapped ``[N, H, W, 3]`` uint8 array.
        crcs (np.ndarray): uint32 [N], one per image.
    """

    def __init__(self, path: str, images: np.ndarray, crcs: np.ndarray) -> None:
        self.path = path
        self.images = images
        self.crcs = crcs
        self.shape = images.shape
        self.damaged = False

    def __len__(self) -> int:
        return len(self.images)

    def get(self, i: int) -> Optional[np.ndarray]:
        """Image ``i`` as a writable uint8 [H, W, 3] copy, or None when its
        bytes fail the CRC (the cache is then deleted, once, with a warning, so
        the next open rebuilds it; the caller decodes the image itself)."""
        img = np.array(self.images[i])
        if _crc(img) == int(self.crcs[i]):
            return img
        if not self.damaged:
            self.damaged = True
            warnings.warn(f'{self.path}: image {i} does not match its checksum '
                          '(the cache file is damaged); decoding from the .bin '
                          'instead and deleting the cache so that it is rebuilt')
            try:
                _remove(self.path)
            except OSError:
                pass
        return None


def _remove_stale(path: str) -> None:
    """Delete the caches of earlier versions of the same ``.bin``."""
    stem = osp.basename(path)[:-len(_SUFFIX) - 17]
    pattern = glob.escape(stem) + '.' + '[0-9a-f]' * 16 + _SUFFIX
    for old in glob.glob(osp.join(osp.dirname(path), pattern)):
        if old != path:
            _remove(old)


def open_bin_cache(bin_path: str,
                   num_images: int,
                   decode: Callable[[int], np.ndarray],
                   cache_dir: Optional[str] = None
                   ) -> Optional[DecodedBinCache]:
    """The decoded images of ``bin_path``, memory-mapped, building them if needed.

    Args:
        bin_path (str): The verification ``.bin``.
        num_images (int): Its number of images (2 x pairs).
        decode (Callable): ``decode(i)`` -> image ``i`` as uint8 ``[H, W, 3]``
            (raises for an undecodable image).
        cache_dir (str, optional): Folder for the cache file (it must exist);
            defaults to the ``.bin``'s folder.

    Returns:
        DecodedBinCache | None: The checked images (``.get(i)``; ``.shape``
        ``[N, H, W, 3]``), or None (with a warning) when no cache can be built:
        a folder that is not writable, images of several sizes or an
        undecodable image. The caller then decodes the
        JPEGs as usual, under its own bad-image policy.

    Examples:
        >>> cache = open_bin_cache('data/faces_emore/lfw.bin', 12000,
        ...                        lambda i: decode_image(...))  # doctest: +SKIP
    """
    if num_images < 1:
        return None
    path = bin_cache_path(bin_path, cache_dir)
    for attempt in (0, 1):
        try:
            # A cache file that exists is complete (renamed into place): a
            # read-only folder with a prebuilt cache needs no lock.
            if not osp.exists(path):
                with FileLock(path + '.lock'):
                    if not osp.exists(path):
                        _build(path, num_images, decode)
                        _remove_stale(path)
        except (OSError, DataFormatError) as e:
            warnings.warn(f'{bin_path}: no decoded cache ({e}); decoding the '
                          'JPEGs every pass')
            return None
        why = _open_problem(path, num_images)
        if isinstance(why, DecodedBinCache):
            return why
        if attempt == 0:
            warnings.warn(f'{path}: {why}; rebuilding the decoded cache')
            try:
                with FileLock(path + '.lock'):
                    if isinstance(_open_problem(path, num_images), str):
                        _remove(path)
            except OSError as e:
                warnings.warn(f'{path}: cannot remove the damaged cache ({e}); '
                              'decoding the JPEGs every pass')
                return None
    warnings.warn(f'{path}: {why}; decoding the JPEGs every pass')
    return None


def _open_problem(path: str, num_images: int):
    """The opened cache, or what is wrong with the file (a string)."""
    try:
        arr = np.load(path, mmap_mode='r', allow_pickle=False)
        crcs = np.load(path + _CRC_SUFFIX, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        return f'cannot be read as a decoded cache ({type(e).__name__}: {e})'
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[0] != num_images \
            or arr.shape[3] != 3:
        return (f'holds {arr.dtype} {arr.shape}, expected {num_images} uint8 '
                'images [H, W, 3]')
    if crcs.dtype != np.uint32 or crcs.shape != (num_images, ):
        return f'its checksums hold {crcs.dtype} {crcs.shape}'
    return DecodedBinCache(path, arr, crcs)
