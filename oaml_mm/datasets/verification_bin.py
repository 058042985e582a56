"""insightface verification pair files (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``...).

A ``.bin`` file is a pickle of ``(bins, issame_list)``: ``bins`` holds the JPEG bytes of
``2 * len(issame_list)`` images, the two images of pair ``i`` at ``2i`` and ``2i + 1``
(``SPEC.md`` §4; the format of insightface's ``recognition/_datasets_`` and AdaFace's
validation sets). The released files were pickled by Python 2 (byte strings) or Python 3
(``_codecs.encode`` reductions), some with ``numpy.bool_`` flags.

Unpickling runs code chosen by the file, so :func:`load_verification_bin` uses an
unpickler that resolves no real global at all: the three reductions those files use are
replaced by look-alikes that can only build bytes and bools.
"""
import io
import os.path as osp
import pickle
from typing import List, Optional, Sequence, Tuple

import numpy as np

from oaml_mm.errors import DataFormatError, MissingFileError
from oaml_mm.registry import DATASETS

from .base_face_dataset import BaseFaceDataset, decode_image
from .bin_cache import open_bin_cache

__all__ = [
    'write_verification_bin', 'load_verification_bin', 'VerificationBinDataset',
    'load_side_files', 'expand_grid'
]


def _codecs_encode(text, encoding='latin1', errors='strict'):
    # Python 3 pickles bytes at protocol <= 2 as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise pickle.UnpicklingError(
            '_codecs.encode is only admitted for latin1 text')
    return text.encode('latin1')


class _BoolDtype:
    """Stands in for ``numpy.dtype('b1')`` while a numpy bool scalar is rebuilt."""

    def __init__(self, name, align=False, copy=True) -> None:
        if name != 'b1':
            raise pickle.UnpicklingError(
                f'numpy dtype {name!r} is not admitted (only the bool flags '
                'of issame_list)')

    def __setstate__(self, state) -> None:
        # The pickled dtype state (version, byte order, ...) carries nothing we need.
        if not isinstance(state, tuple):
            raise pickle.UnpicklingError('unexpected numpy dtype state')


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, _BoolDtype) or not isinstance(data, bytes) or \
            len(data) != 1:
        raise pickle.UnpicklingError('only numpy bool scalars are admitted')
    return data != b'\x00'


def _bytes(*args):
    # Protocol <= 2 pickles an empty bytes object as a call of builtins.bytes().
    if args:
        raise pickle.UnpicklingError('bytes() is only admitted without arguments')
    return b''


_ADMITTED = {
    ('_codecs', 'encode'): _codecs_encode,
    ('__builtin__', 'bytes'): _bytes,
    ('builtins', 'bytes'): _bytes,
    ('numpy', 'dtype'): _BoolDtype,
    ('numpy.core.multiarray', 'scalar'): _numpy_scalar,
    ('numpy._core.multiarray', 'scalar'): _numpy_scalar,
}


class _RestrictedUnpickler(pickle.Unpickler):

    def find_class(self, module: str, name: str):
        try:
            return _ADMITTED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f'global {module}.{name} is not admitted in a verification '
                'file') from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError('persistent ids are not admitted')


def load_verification_bin(path: str) -> Tuple[List[bytes], List[bool]]:
    """Read a verification ``.bin`` without executing anything from the file.

    Args:
        path (str): The ``.bin`` file.

    Returns:
        tuple: ``(images, issame)``: a list of ``2 * N`` JPEG byte strings and a list
        of ``N`` bools.

    Raises:
        MissingFileError: The file does not exist.
        DataFormatError: The file is not such a pickle, admits a foreign global (a
            malicious file is refused before anything runs), or the counts disagree.

    Examples:
        >>> images, issame = load_verification_bin('lfw.bin')  # doctest: +SKIP
        >>> len(images) == 2 * len(issame)  # doctest: +SKIP
        True
    """
    path = str(path)
    if not osp.isfile(path):
        raise MissingFileError(path, 'an insightface verification pair file')
    with open(path, 'rb') as f:
        raw = f.read()
    try:
        obj = _RestrictedUnpickler(io.BytesIO(raw), encoding='bytes').load()
    except Exception as e:  # noqa: BLE001  (any unpickling failure is a format error)
        raise DataFormatError(
            path, f'not a verification pickle of (list of bytes, list of bool): '
            f'{type(e).__name__}: {e}') from None
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise DataFormatError(
            path, 'expected a pickled pair (images, issame), got '
            f'{type(obj).__name__}')
    images, issame = obj
    if not isinstance(images, (list, tuple)) or \
            not isinstance(issame, (list, tuple)):
        raise DataFormatError(path, 'expected (list of bytes, list of bool)')
    out_images = []
    for i, img in enumerate(images):
        if isinstance(img, bytearray):
            img = bytes(img)
        if not isinstance(img, bytes):
            raise DataFormatError(
                path, f'image {i} is {type(img).__name__}, expected bytes',
                record=f'image {i}')
        out_images.append(img)
    out_issame = []
    for i, flag in enumerate(issame):
        if not isinstance(flag, (bool, int)) or flag not in (0, 1):
            raise DataFormatError(
                path, f'issame[{i}] is {flag!r}, expected a bool',
                record=f'pair {i}', field='issame')
        out_issame.append(bool(flag))
    if len(out_images) != 2 * len(out_issame):
        raise DataFormatError(
            path, f'{len(out_images)} images for {len(out_issame)} pairs, '
            f'expected 2 * {len(out_issame)} = {2 * len(out_issame)}')
    return out_images, out_issame


def write_verification_bin(path: str, jpeg_bytes_list: Sequence[bytes],
                           issame_list: Sequence[bool],
                           protocol: Optional[int] = 4) -> None:
    """Write a verification ``.bin`` as insightface does.

    Args:
        path (str): Output file.
        jpeg_bytes_list (Sequence[bytes]): ``2 * N`` encoded images, pairs interleaved.
        issame_list (Sequence[bool]): ``N`` flags.
        protocol (int): Pickle protocol. Defaults to 4.

    Raises:
        ValueError: The counts disagree.
    """
    images = [bytes(b) for b in jpeg_bytes_list]
    issame = [bool(x) for x in issame_list]
    if len(images) != 2 * len(issame):
        raise ValueError(f'{len(images)} images for {len(issame)} pairs, '
                         f'expected {2 * len(issame)}')
    with open(path, 'wb') as f:
        pickle.dump((images, issame), f, protocol=protocol)


@DATASETS.register_module()
class VerificationBinDataset(BaseFaceDataset):
    """One sample per image of a verification ``.bin``; decoded lazily.

    Sample ``i`` is image ``i % 2`` of pair ``i // 2``; its metainfo carries
    ``pair_index``, ``pair_slot``, ``issame`` and ``dataset_name``, so a metric can
    rebuild the pairs whatever order the samples arrive in.

    Examples:
        >>> lfw = dict(type='VerificationBinDataset', data_root='data/faces_emore',
        ...            ann_file='lfw.bin', name='lfw',
        ...            pipeline=[dict(type='PackFaceInputs')])

    With ``side_files=True`` the SynthFace side files beside the ``.bin``
    (``docs/synthface.md``) are read too: ``<stem>.vis.npy`` (true 7x7 visibility of
    every image) becomes the sample's ``visibility_mask`` (so ``PackFaceInputs`` sets
    ``gt_visibility``) and ``<stem>.types.txt`` its ``occlusion_type`` metainfo; a
    metric can then score QAConv with the true masks and measure the occlusion
    head's error (``VerificationMetric(visibility_ablation=True)``).

    Args:
        ann_file (str): The ``.bin`` file (relative to ``data_root``).
        name (str, optional): Data set name used in metric keys; defaults to the
            file name without extension.
        data_root (str): Folder of the file.
        side_files (bool): Read ``<stem>.vis.npy`` and ``<stem>.types.txt``.
            Defaults to False.
        decoded_cache (bool): Decode the images once into a memory-mapped
            ``<file>.<fingerprint>.u8.npy`` beside the ``.bin`` (or in
            ``cache_dir``) and read them from there; see
            :mod:`oaml_mm.datasets.bin_cache`. Defaults to False.
        cache_dir (str, optional): Folder for the decoded cache.
        **kwargs: See :class:`~oaml_mm.datasets.base_face_dataset.BaseFaceDataset`.
    """

    def __init__(self, ann_file: str, name: Optional[str] = None,
                 data_root: str = '', side_files: bool = False,
                 decoded_cache: bool = False, cache_dir: Optional[str] = None,
                 **kwargs) -> None:
        if name is None:
            name = osp.splitext(osp.basename(ann_file))[0]
        self._blob = None
        self._offsets = None
        self._issame = None
        self.side_files = side_files
        self._vis = None
        self._types = None
        self.decoded_cache = decoded_cache
        self.cache_dir = cache_dir
        self._decoded = None
        kwargs.setdefault('test_mode', True)
        super().__init__(data_root=data_root, ann_file=ann_file,
                         dataset_name=name, **kwargs)

    def load_index(self) -> int:
        images, issame = load_verification_bin(self.ann_file)
        # One contiguous buffer: DataLoader workers share it without touching the
        # reference counts of thousands of bytes objects (copy-on-write growth).
        sizes = np.fromiter((len(b) for b in images), np.int64, len(images))
        self._offsets = np.concatenate([[0], np.cumsum(sizes)])
        self._blob = np.frombuffer(b''.join(images), np.uint8)
        self._issame = np.asarray(issame, bool)
        self._metainfo['num_pairs'] = len(issame)
        if self.side_files:
            self._vis, self._types = load_side_files(self.ann_file, len(images))
        if self.decoded_cache:
            self._decoded = open_bin_cache(
                self.ann_file, len(images), lambda i: decode_image(
                    self._blob[self._offsets[i]:self._offsets[i + 1]],
                    self.ann_file, f'image {i}'), self.cache_dir)
        return len(images)

    @property
    def issame(self) -> np.ndarray:
        """The ``issame`` flag of every pair."""
        if not self._fully_initialized:
            self.full_init()
        return self._issame.copy()

    def get_info(self, i: int) -> dict:
        info = dict(img_path=self.ann_file, key=i, pair_index=i // 2,
                    pair_slot=i % 2, issame=bool(self._issame[i // 2]))
        if self._types is not None:
            info['occlusion_type'] = self._types[i]
        return info

    def load_sample(self, info: dict) -> bool:
        i = info['key']
        if self._decoded is not None:
            img = np.array(self._decoded[i])  # writable: transforms may modify it
        else:
            buf = self._blob[self._offsets[i]:self._offsets[i + 1]]
            img = self.decode(buf, self.ann_file, f'image {i}')
        if img is None:
            return False
        info['img'] = img
        if self._vis is not None:
            info['visibility_mask'] = expand_grid(self._vis[i], img.shape[:2])
        return True


def expand_grid(grid: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Spread a coarse visibility grid over an image as constant blocks.

    Area-averaging the result back onto the grid (``visibility_to_grid``) returns the
    grid exactly when the image side is a multiple of the grid side (112 = 7 x 16).

    Args:
        grid (np.ndarray): [rows, cols] visibility in [0, 1].
        shape (tuple[int, int]): Image ``(H, W)``.

    Returns:
        np.ndarray: float32 [H, W].
    """
    grid = np.asarray(grid, np.float32)
    rows = (np.arange(shape[0]) * grid.shape[0]) // shape[0]
    cols = (np.arange(shape[1]) * grid.shape[1]) // shape[1]
    return grid[rows[:, None], cols[None, :]]


def load_side_files(bin_path: str, num_images: int
                    ) -> Tuple[np.ndarray, Optional[List[str]]]:
    """Read the SynthFace side files of a ``.bin``: true visibility and types.

    Args:
        bin_path (str): The ``.bin`` file; the side files share its stem.
        num_images (int): Images in the ``.bin`` (``2 * pairs``).

    Returns:
        tuple: float32 ``[num_images, rows, cols]`` visibility in [0, 1] and the
        occlusion type of every image (None when ``<stem>.types.txt`` is absent).

    Raises:
        MissingFileError: ``<stem>.vis.npy`` does not exist.
        DataFormatError: A side file has the wrong shape, count or values.
    """
    stem = osp.splitext(str(bin_path))[0]
    vis_path = stem + '.vis.npy'
    if not osp.isfile(vis_path):
        raise MissingFileError(
            vis_path, 'the true-visibility side file of a SynthFace .bin '
            '(float16 [2N, 7, 7]); set side_files=False for other .bin files')
    try:
        vis = np.load(vis_path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001  (any numpy failure is a format error)
        raise DataFormatError(vis_path, f'not a .npy array: {e}') from None
    if vis.ndim != 3 or vis.shape[0] != num_images:
        raise DataFormatError(
            vis_path, f'expected [{num_images}, rows, cols] visibility (one map '
            f'per image of the .bin), got shape {tuple(vis.shape)}')
    vis = vis.astype(np.float32)
    if not np.isfinite(vis).all() or vis.min() < 0 or vis.max() > 1:
        raise DataFormatError(vis_path, 'visibility must lie in [0, 1]')
    types_path = stem + '.types.txt'
    if not osp.isfile(types_path):
        return vis, None
    with open(types_path, encoding='utf-8', errors='replace') as f:
        types = [line.strip() for line in f if line.strip()]
    if len(types) != num_images:
        raise DataFormatError(
            types_path, f'{len(types)} occlusion types for {num_images} images '
            '(one line per image of the .bin)')
    return vis, types
