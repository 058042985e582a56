"""Decode a verification ``.bin`` once into a memory-mapped uint8 array beside it.

Validating on the five insightface ``.bin`` sets every epoch decodes the same ~60,000
JPEGs every time (``docs/datasets.md``, "Fast validation files"). The decoded images
of one ``.bin`` fit one ``[N, H, W, 3]`` uint8 ``.npy`` file (451 MB for LFW's 12,000
images at 112x112); opened with ``mmap_mode='r'`` it is shared by every DataLoader
worker and every rank of the machine through the page cache, and a sample is one
copy of 37 KB instead of a JPEG decode.

Invalidation: the cache file's name carries a fingerprint of the ``.bin`` (size,
modification time in ns and a SHA-1 of its first 64 KiB), so a changed ``.bin`` has
another cache name and the stale file is deleted once the new one exists. A cache
file is complete whenever it exists: it is written to a temporary file in the same
folder and renamed (atomic on POSIX), under a ``filelock`` lock so that several
ranks or processes build it once.
"""
import glob
import hashlib
import os
import os.path as osp
import tempfile
import warnings
from typing import Callable, Optional

import numpy as np
from filelock import FileLock

from oaml_mm.errors import DataFormatError

__all__ = ['bin_fingerprint', 'bin_cache_path', 'open_bin_cache']

_HEAD_BYTES = 64 * 1024
_SUFFIX = '.u8.npy'


def bin_fingerprint(bin_path: str) -> str:
    """16 hex digits from the file's size, mtime (ns) and first 64 KiB.

    Raises:
        FileNotFoundError: ``bin_path`` does not exist.
    """
    st = os.stat(bin_path)
    h = hashlib.sha1(f'{st.st_size}:{st.st_mtime_ns}:'.encode())
    with open(bin_path, 'rb') as f:
        h.update(f.read(_HEAD_BYTES))
    return h.hexdigest()[:16]


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


def _build(path: str, num: int, decode: Callable[[int], np.ndarray]) -> None:
    first = decode(0)
    shape = (num, ) + first.shape
    fd, tmp = tempfile.mkstemp(dir=osp.dirname(path) or '.',
                               prefix=osp.basename(path) + '.', suffix='.tmp')
    os.close(fd)
    try:
        arr = np.lib.format.open_memmap(tmp, mode='w+', dtype=np.uint8,
                                        shape=shape)
        arr[0] = first
        for i in range(1, num):
            img = decode(i)
            if img.shape != first.shape:
                raise DataFormatError(
                    path, f'image {i} is {img.shape}, image 0 {first.shape}; '
                    'the decoded cache needs one image size', record=i)
            arr[i] = img
        arr.flush()
        del arr
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def _remove_stale(path: str) -> None:
    """Delete the caches of earlier versions of the same ``.bin``."""
    stem = osp.basename(path)[:-len(_SUFFIX) - 17]
    pattern = glob.escape(stem) + '.' + '[0-9a-f]' * 16 + _SUFFIX
    for old in glob.glob(osp.join(osp.dirname(path), pattern)):
        if old != path:
            os.remove(old)


def open_bin_cache(bin_path: str,
                   num_images: int,
                   decode: Callable[[int], np.ndarray],
                   cache_dir: Optional[str] = None) -> Optional[np.ndarray]:
    """The decoded images of ``bin_path``, memory-mapped, building them if needed.

    Args:
        bin_path (str): The verification ``.bin``.
        num_images (int): Its number of images (2 x pairs).
        decode (Callable): ``decode(i)`` -> image ``i`` as uint8 ``[H, W, 3]``
            (raises for an undecodable image).
        cache_dir (str, optional): Folder for the cache file (it must exist);
            defaults to the ``.bin``'s folder.

    Returns:
        np.ndarray | None: Read-only ``[N, H, W, 3]`` uint8 memmap, or None (with a
        warning) when no cache can be built: a folder that is not writable, images
        of several sizes or an undecodable image. The caller then decodes the
        JPEGs as usual, under its own bad-image policy.

    Examples:
        >>> cache = open_bin_cache('data/faces_emore/lfw.bin', 12000,
        ...                        lambda i: decode_image(...))  # doctest: +SKIP
    """
    if num_images < 1:
        return None
    path = bin_cache_path(bin_path, cache_dir)
    try:
        # A cache file that exists is complete (renamed into place): a read-only
        # folder with a prebuilt cache needs no lock.
        if not osp.exists(path):
            with FileLock(path + '.lock'):
                if not osp.exists(path):
                    _build(path, num_images, decode)
                    _remove_stale(path)
    except (OSError, DataFormatError) as e:
        warnings.warn(f'{bin_path}: no decoded cache ({e}); decoding the JPEGs '
                      'every pass')
        return None
    arr = np.load(path, mmap_mode='r')
    if arr.ndim != 4 or arr.shape[0] != num_images:
        warnings.warn(f'{path} holds {arr.shape}, expected {num_images} images; '
                      'decoding the JPEGs every pass')
        return None
    return arr
