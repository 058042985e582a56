"""insightface verification pair files (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``).

A ``.bin`` file is a pickle of ``(bins, issame_list)``: ``bins`` holds the JPEG bytes of
``2 * len(issame_list)`` images, the two images of pair ``i`` at ``2i`` and ``2i + 1``
(docs/datasets.md; the format of insightface's ``recognition/_datasets_`` and AdaFace's
validation sets). The released files were pickled by Python 2 (byte strings) or Python 3
(``_codecs.encode`` reductions), some with ``numpy.bool_`` flags.

Home-made packers often store each image as the 1-D ``uint8`` array ``cv2.imencode``
returns, pickled with numpy 1.x (``numpy.core``) or 2.x (``numpy._core``) module paths
at any protocol.

Unpickling runs code chosen by the file, so :func:`load_verification_bin` uses an
unpickler that resolves no real global at all: the reductions those files use
(``_codecs.encode``, numpy's ``_reconstruct`` / ``_frombuffer`` / ``scalar`` /
``dtype``) are replaced by look-alikes that can only build bytes, bools and plain
numeric arrays over the pickle's own bytes.
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


# Plain numeric dtypes only: an object dtype ('O') would let the pickle place
# arbitrary objects in an array, a structured one carries field objects.
_NUMERIC_DTYPES = frozenset(
    ('b1', 'u1', 'i1', 'u2', 'i2', 'u4', 'i4', 'u8', 'i8', 'f2', 'f4', 'f8'))


def _text(value) -> str:
    # Python 2 pickles read with encoding='bytes' give byte strings for str.
    return value.decode('latin1') if isinstance(value, bytes) else value


class _Dtype:
    """Stands in for ``numpy.dtype(name, align, copy)`` of a plain numeric type."""

    def __init__(self, name, align=False, copy=True) -> None:
        name = _text(name)
        if not isinstance(name, str) or name not in _NUMERIC_DTYPES:
            raise pickle.UnpicklingError(
                f'numpy dtype {name!r} is not admitted (only plain numeric '
                f'dtypes: {", ".join(sorted(_NUMERIC_DTYPES))})')
        self.dtype = np.dtype(name)

    def __setstate__(self, state) -> None:
        # (version, byte order, subarray, names, fields, elsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 5 or \
                any(x is not None for x in state[2:5]):
            raise pickle.UnpicklingError(
                'only plain numeric numpy dtypes are admitted (no subarray or '
                'structured fields)')
        order = _text(state[1])
        if order not in ('<', '>', '|', '='):
            raise pickle.UnpicklingError(f'numpy byte order {order!r} unknown')
        if order in ('<', '>'):
            self.dtype = self.dtype.newbyteorder(order)


def _array(data, dtype: '_Dtype', shape, fortran: bool = False) -> np.ndarray:
    if not isinstance(dtype, _Dtype):
        raise pickle.UnpicklingError('numpy array without an admitted dtype')
    if isinstance(data, str):
        data = data.encode('latin1')
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError(
            'numpy array data must be raw bytes (object arrays are refused)')
    if isinstance(shape, int):
        shape = (shape, )
    if not isinstance(shape, tuple) or len(shape) > 4 or not all(
            isinstance(d, int) and d >= 0 for d in shape):
        raise pickle.UnpicklingError(f'numpy array shape {shape!r} refused')
    count = int(np.prod(shape, dtype=object))
    if count * dtype.dtype.itemsize != len(data):
        raise pickle.UnpicklingError(
            f'numpy array of shape {shape} and dtype {dtype.dtype.str} needs '
            f'{count * dtype.dtype.itemsize} bytes, the pickle holds {len(data)}')
    # Reads the pickle's own bytes: no allocation beyond what the file holds.
    return np.frombuffer(data, dtype.dtype).reshape(
        shape, order='F' if fortran else 'C')


class _NdarrayClass:
    """Stands in for the ``numpy.ndarray`` class argument of ``_reconstruct``."""


class _ArrayStub:
    """What ``numpy.core.multiarray._reconstruct`` builds; ``BUILD`` fills it."""

    array = None

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError('unexpected numpy array state')
        if len(state) == 5:  # (version, shape, dtype, is_fortran, data)
            state = state[1:]
        shape, dtype, fortran, data = state
        self.array = _array(data, dtype, shape, bool(fortran))


def _reconstruct(cls, shape, typecode):
    # ndarray.__reduce__ at protocol <= 4: _reconstruct(ndarray, (0,), b'b').
    if cls is not _NdarrayClass:
        raise pickle.UnpicklingError('_reconstruct is only admitted for ndarray')
    return _ArrayStub()


def _frombuffer(buf, dtype, shape, order='C'):
    # ndarray.__reduce_ex__ at protocol 5: _frombuffer(buffer, dtype, shape, order).
    return _array(buf, dtype, shape, _text(order) == 'F')


def _numpy_scalar(dtype, data=None):
    if isinstance(data, str):
        data = data.encode('latin1')
    if not isinstance(dtype, _Dtype) or not isinstance(data, bytes) or \
            len(data) != dtype.dtype.itemsize:
        raise pickle.UnpicklingError('only numeric numpy scalars are admitted')
    return np.frombuffer(data, dtype.dtype)[0].item()


def _bytes(*args):
    # Protocol <= 2 pickles an empty bytes object as a call of builtins.bytes().
    if args:
        raise pickle.UnpicklingError('bytes() is only admitted without arguments')
    return b''


_ADMITTED = {
    ('_codecs', 'encode'): _codecs_encode,
    ('__builtin__', 'bytes'): _bytes,
    ('builtins', 'bytes'): _bytes,
    ('numpy', 'dtype'): _Dtype,
    ('numpy', 'ndarray'): _NdarrayClass,
}
# numpy 1.x pickles name numpy.core, numpy 2.x numpy._core.
for _core in ('numpy.core', 'numpy._core'):
    _ADMITTED[(f'{_core}.multiarray', 'scalar')] = _numpy_scalar
    _ADMITTED[(f'{_core}.multiarray', '_reconstruct')] = _reconstruct
    _ADMITTED[(f'{_core}.numeric', '_frombuffer')] = _frombuffer


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


def _plain(value):
    """An :class:`_ArrayStub` as its array; anything else unchanged."""
    if isinstance(value, _ArrayStub):
        if value.array is None:
            raise pickle.UnpicklingError('numpy array without data')
        return value.array
    return value


def load_verification_bin(path: str) -> Tuple[List[bytes], List[bool]]:
    """Read a verification ``.bin`` without executing anything from the file.

    Accepted: any pickle protocol (0-5), Python 2 and 3 pickles, images as
    ``bytes`` or as the 1-D ``uint8`` numpy array ``cv2.imencode`` returns (numpy
    1.x ``numpy.core`` or 2.x ``numpy._core`` module paths), ``issame`` as a list of
    bools / numpy bools or a numpy bool array. numpy objects are rebuilt by
    look-alikes that only admit plain numeric dtypes and read the pickle's own
    bytes; nothing callable from the file runs.

    Args:
        path (str): The ``.bin`` file.

    Returns:
        tuple: ``(images, issame)``: a list of ``2 * N`` JPEG byte strings and a list
        of ``N`` bools. An image the file references several times is one shared
        ``bytes`` object, so memory stays bounded by the file's size.

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
        obj = _plain(obj)
        if isinstance(obj, (tuple, list)) and len(obj) == 2:
            obj = (_plain(obj[0]), _plain(obj[1]))
    except Exception as e:  # noqa: BLE001  (any unpickling failure is a format error)
        raise DataFormatError(
            path, f'not a verification pickle of (list of bytes, list of bool): '
            f'{type(e).__name__}: {e}') from None
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise DataFormatError(
            path, 'expected a pickled pair (images, issame), got '
            f'{type(obj).__name__}')
    images, issame = obj
    if isinstance(issame, np.ndarray) and issame.ndim == 1:
        issame = issame.tolist()
    if not isinstance(images, (list, tuple)) or \
            not isinstance(issame, (list, tuple)):
        raise DataFormatError(path, 'expected (list of bytes, list of bool)')
    out_images = []
    # The pickle memo lets one object be referenced many times (a 6 MiB file can
    # list one image 2**21 times): convert each object once and share the result.
    converted = {}
    for i, img in enumerate(images):
        done = converted.get(id(img))
        if done is not None:
            out_images.append(done[1])
            continue
        orig = img
        img = _plain(img)
        if isinstance(img, np.ndarray):
            if img.dtype.itemsize != 1 or img.dtype.kind not in 'ui' or \
                    img.ndim > 2 or (img.ndim == 2 and 1 not in img.shape):
                raise DataFormatError(
                    path, f'image {i} is a numpy array of dtype {img.dtype} and '
                    f'shape {img.shape}, expected the 1-D uint8 array of an '
                    'encoded image', record=f'image {i}')
            img = img.tobytes()
        elif isinstance(img, bytearray):
            img = bytes(img)
        if not isinstance(img, bytes):
            raise DataFormatError(
                path, f'image {i} is {type(img).__name__}, expected bytes',
                record=f'image {i}')
        converted[id(orig)] = (orig, img)  # keep orig alive: ids stay unique
        out_images.append(img)
    out_issame = []
    for i, flag in enumerate(issame):
        if isinstance(flag, float) or not isinstance(flag, (bool, int)) or \
                flag not in (0, 1):
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
        self._spans = None
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
        # An image the file references several times is stored once (the file
        # may list one image 2**21 times), so the buffer never exceeds the file.
        self._spans = np.zeros((len(images), 2), np.int64)
        where = {}
        chunks = []
        pos = 0
        for i, b in enumerate(images):
            span = where.get(id(b))
            if span is None:
                span = where[id(b)] = (pos, pos + len(b))
                chunks.append(b)
                pos += len(b)
            self._spans[i] = span
        self._blob = np.frombuffer(b''.join(chunks), np.uint8)
        self._issame = np.asarray(issame, bool)
        self._metainfo['num_pairs'] = len(issame)
        if self.side_files:
            self._vis, self._types = load_side_files(self.ann_file, len(images))
        if self.decoded_cache:
            self._decoded = open_bin_cache(
                self.ann_file, len(images), lambda i: decode_image(
                    self._blob[self._spans[i, 0]:self._spans[i, 1]],
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
        # A writable copy (transforms may modify it), or None when the cached
        # bytes fail their checksum: then decoded from the .bin as without cache.
        img = self._decoded.get(i) if self._decoded is not None else None
        if img is None:
            buf = self._blob[self._spans[i, 0]:self._spans[i, 1]]
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
    with open(types_path, encoding='utf-8-sig', errors='replace') as f:
        types = [line.strip() for line in f if line.strip()]
    if len(types) != num_images:
        raise DataFormatError(
            types_path, f'{len(types)} occlusion types for {num_images} images '
            '(one line per image of the .bin)')
    return vis, types
