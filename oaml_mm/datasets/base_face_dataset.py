"""Common base of the face data sets: index-only memory, decoding, bad-image policy.

mmengine's :class:`~mmengine.dataset.BaseDataset` keeps one dict per sample; for MS1MV2
(5.8M images) or a 100k-identity folder that alone is gigabytes per DataLoader worker.
The face data sets therefore keep a compact index (numpy arrays) and build each sample's
dict on demand; the rest of the mmengine contract (``pipeline``, ``test_mode``,
``lazy_init``, ``max_refetch``, ``metainfo``, ``indices``) is unchanged.

Results dicts handed to the pipeline carry ``img`` (uint8 [H,W,3], **RGB**),
``img_shape``, ``ori_shape``, ``sample_idx`` and, where the format has them,
``gt_label``, ``visibility_mask`` (float32 [H,W], 1 = visible), ``landmarks`` ([5,2])
and the metainfo keys of ``docs/architecture.md``.
"""
import abc
import io
import os
import os.path as osp
import struct
import tempfile
import uuid
from typing import Any, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from mmengine.dataset import BaseDataset, Compose
from mmengine.logging import print_log

from oaml_mm.errors import ConfigError, DataFormatError
from oaml_mm.registry import TRANSFORMS

__all__ = [
    'BaseFaceDataset', 'decode_image', 'image_size', 'is_hidden_entry',
    'walk_visible', 'check_relative_path', 'read_text', 'MAX_IMAGE_PIXELS',
    'MAX_LABEL', 'SYSTEM_ENTRIES'
]


#: Largest image (width x height) a reader decodes: 8192 x 8192, 192 MiB as RGB.
#: Face crops are 112 x 112 and IJB ``loose_crop`` frames a few megapixels; a header
#: claiming more is refused before any pixel memory is allocated.
MAX_IMAGE_PIXELS = 1 << 26

#: Labels index a classifier's rows (int32 in the heads): larger is a damaged file.
MAX_LABEL = 2**31 - 1

#: Names operating systems and tools leave beside images; folder readers skip them
#: and everything whose name starts with ``.`` (``.ipynb_checkpoints``, ``.DS_Store``,
#: macOS AppleDouble ``._*`` files).
SYSTEM_ENTRIES = frozenset(
    ('__macosx', 'thumbs.db', 'desktop.ini', 'ehthumbs.db', '$recycle.bin',
     'system volume information', '@eadir'))


def is_hidden_entry(name: str) -> bool:
    """True for a hidden or operating-system entry a folder reader must skip.

    Args:
        name (str): A file or folder name (one path component).

    Returns:
        bool: ``name`` starts with ``.`` (hidden on Unix, AppleDouble ``._*``,
        ``.DS_Store``, ``.ipynb_checkpoints``) or is one of :data:`SYSTEM_ENTRIES`
        (``__MACOSX``, ``Thumbs.db``, ``desktop.ini``, ...), compared without case.
    """
    return name.startswith('.') or name.lower() in SYSTEM_ENTRIES


def walk_visible(top: str):
    """``os.walk(top)`` in sorted order without hidden or system entries.

    Yields:
        tuple: ``(root, files)`` with the visible file names of ``root``, sorted.
    """
    for root, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if not is_hidden_entry(d))
        yield root, sorted(f for f in files if not is_hidden_entry(f))


def check_relative_path(name: str, path: str, record: Any = None,
                        field: str = 'image') -> str:
    """Refuse an image name of a meta/list file that would leave the data root.

    Args:
        name (str): The name as written in the file (relative to the data root).
        path (str): The meta/list file (for the error message).
        record (Any): Line or record (for the error message).
        field (str): Field name (for the error message).

    Returns:
        str: ``name`` unchanged.

    Raises:
        DataFormatError: ``name`` is empty, absolute (``/x``, ``C:\\x``, ``\\\\host``),
            contains a NUL byte or a ``..`` component that climbs out of the root.
    """
    norm = name.replace('\\', '/')
    parts = norm.split('/')
    depth = 0
    climbs = False
    for part in parts:
        if part == '..':
            depth -= 1
            climbs = climbs or depth < 0
        elif part not in ('', '.'):
            depth += 1
    drive = len(norm) >= 2 and norm[1] == ':'
    if not name or '\0' in name or norm.startswith('/') or drive or climbs:
        raise DataFormatError(
            path, f'image name {name[:80]!r} leaves the data root; expected a '
            'path relative to it without leading "/" or climbing "..", and no '
            'drive letter', record=record, field=field)
    return name


def read_text(path: str, what: str) -> str:
    """A whole text file as UTF-8, a leading byte-order mark dropped (universal
    newlines are left to the caller).

    Raises:
        DataFormatError: A byte sequence is not UTF-8; names the line.
    """
    with open(path, 'rb') as f:
        raw = f.read()
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is dropped,
        # not read as part of the first name or header.
        return raw.decode('utf-8-sig')
    except UnicodeDecodeError as e:
        lineno = raw.count(b'\n', 0, e.start) + 1
        raise DataFormatError(
            path, f'byte 0x{raw[e.start]:02x} is not UTF-8 text ({what})',
            record=f'line {lineno}') from None


_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
# JPEG start-of-frame markers (baseline, extended, progressive, lossless...); not
# DHT (C4), JPG (C8) or DAC (CC), which share the range.
_JPEG_SOF = frozenset(range(0xc0, 0xd0)) - {0xc4, 0xc8, 0xcc}


def _jpeg_size(head: bytes) -> Optional[Tuple[int, int]]:
    """Width and height from the first start-of-frame segment (ITU T.81, B.2.2)."""
    i = 2
    n = len(head)
    while i + 9 <= n:
        if head[i] != 0xff:
            return None
        marker = head[i + 1]
        if marker == 0xff:  # fill byte
            i += 1
            continue
        if marker in _JPEG_SOF:
            h, w = struct.unpack_from('>HH', head, i + 5)
            return w, h
        if marker == 0x01 or 0xd0 <= marker <= 0xd9:  # no length field
            i += 2
            continue
        i += 2 + struct.unpack_from('>H', head, i + 2)[0]
    return None


def image_size(buf: Union[bytes, np.ndarray]) -> Optional[Tuple[int, int]]:
    """``(width, height)`` from an encoded image's header, without decoding pixels.

    PNG (IHDR) and JPEG (first start-of-frame segment) headers are read directly,
    which costs a few microseconds against ~200 for decoding a 112x112 face; other
    formats are probed by Pillow, which reads only the header as well.

    Returns:
        tuple | None: The size, or None when the header is not recognised (OpenCV
        may still decode the image, and bounds it at 2**30 pixels itself).

    Raises:
        ValueError: The header claims more than Pillow's own decompression-bomb
            limit.
    """
    head = memoryview(buf).cast('B') if isinstance(buf, np.ndarray) else \
        memoryview(buf)
    if head[:8] == _PNG_MAGIC and len(head) >= 24 and head[12:16] == b'IHDR':
        w, h = struct.unpack_from('>II', head, 16)
        return w, h
    if head[:2] == b'\xff\xd8':
        # Segments before the frame header (EXIF, ICC profiles) can be large.
        return _jpeg_size(bytes(head[:1 << 20]))
    from PIL import Image
    try:
        with Image.open(io.BytesIO(bytes(head))) as im:
            return tuple(int(v) for v in im.size)
    except Image.DecompressionBombError:
        raise ValueError(f'more than {2 * Image.MAX_IMAGE_PIXELS} pixels '
                         '(Pillow\'s decompression-bomb limit)') from None
    except Exception:  # noqa: BLE001  (unrecognised or damaged header: let cv2 try)
        return None


def decode_image(buf: Union[bytes, np.ndarray], path: str,
                 key: Any = None, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Decode JPEG/PNG bytes to an RGB uint8 array.

    The header's width x height is checked against :data:`MAX_IMAGE_PIXELS` before
    decoding (a 70-byte PNG can claim 65535 x 65535 pixels), and OpenCV's own
    assertion failures (``cv2.error``) become :class:`DataFormatError`, so the
    ``on_bad_image='skip'`` policy sees every undecodable image.

    Args:
        buf (bytes | np.ndarray): Encoded image.
        path (str): File the bytes come from (for the error message).
        key (Any): Record key or line (for the error message).
        flags (int): ``cv2.IMREAD_COLOR`` (default: RGB [H,W,3]) or
            ``cv2.IMREAD_GRAYSCALE`` ([H,W], returned as decoded; with
            ``| cv2.IMREAD_ANYDEPTH`` a 16-bit PNG stays uint16).

    Returns:
        np.ndarray: uint8 [H,W,3] in RGB order ([H,W] for grayscale, uint16
        for a 16-bit image read with ``IMREAD_ANYDEPTH``).

    Raises:
        DataFormatError: The bytes are not a decodable image, or the image is larger
            than :data:`MAX_IMAGE_PIXELS`.
    """
    arr = np.frombuffer(buf, np.uint8) if not isinstance(buf, np.ndarray) \
        else buf.reshape(-1).view(np.uint8)
    try:
        size = image_size(arr) if arr.size else None
    except ValueError as e:
        raise DataFormatError(
            path, f'image header claims {e}, more than the {MAX_IMAGE_PIXELS} '
            'a face image may have', record=key, field='image') from None
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise DataFormatError(
            path, f'image header claims {size[0]}x{size[1]} pixels, more than '
            f'the {MAX_IMAGE_PIXELS} a face image may have', record=key,
            field='image')
    try:
        img = cv2.imdecode(arr, flags) if arr.size else None
    except cv2.error as e:
        reason = str(e).strip().splitlines()[-1][:120]
        raise DataFormatError(
            path, f'cannot decode {arr.size} bytes as an image (OpenCV: '
            f'{reason}); expected JPEG or PNG data', record=key,
            field='image') from None
    if img is None:
        raise DataFormatError(
            path, f'cannot decode {arr.size} bytes as an image; expected JPEG '
            'or PNG data', record=key, field='image')
    if flags & ~cv2.IMREAD_ANYDEPTH == cv2.IMREAD_GRAYSCALE:
        return img
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class BaseFaceDataset(BaseDataset, metaclass=abc.ABCMeta):
    """Base class: subclasses fill an index in :meth:`load_index`.

    Subclasses implement ``load_index()`` (set up arrays, return the number of
    samples), ``get_info(i)`` (the metadata dict of raw sample ``i``) and
    ``load_sample(info)`` (add ``img`` and whatever else needs file access to
    ``info``; return False to skip an undecodable image under the skip policy by calling
    :meth:`bad_image`).

    Args:
        data_root (str): Root folder of the data set.
        ann_file (str): Annotation / index file, relative to ``data_root``.
        pipeline (Sequence[dict | callable]): Transforms (built in the oaml_mm scope).
        dataset_name (str, optional): Stored in every sample's metainfo.
        num_classes (int, optional): Number of identities, when the files do not say.
        on_bad_image (str): ``'raise'`` (default) a :class:`DataFormatError` on an
            undecodable image, or ``'skip'``: log its key, draw another sample and
            count it; :meth:`log_skipped` logs the total (``DualLoaderHook`` calls it
            at the end of every epoch).
        test_mode (bool): As in mmengine (no refetch on ``None``).
        lazy_init (bool): Defer reading the index to the first use.
        max_refetch (int): Retries after a skipped sample.
        indices (int | Sequence[int], optional): Use only the first ``n`` or the
            listed samples.
        metainfo (dict, optional): Extra metainfo.
    """

    METAINFO: dict = dict()

    def __init__(self,
                 data_root: str = '',
                 ann_file: str = '',
                 pipeline: Sequence = (),
                 dataset_name: Optional[str] = None,
                 num_classes: Optional[int] = None,
                 on_bad_image: str = 'raise',
                 test_mode: bool = False,
                 lazy_init: bool = False,
                 max_refetch: int = 1000,
                 indices: Optional[Union[int, Sequence[int]]] = None,
                 metainfo: Optional[dict] = None) -> None:
        if on_bad_image not in ('raise', 'skip'):
            raise ConfigError(
                f"on_bad_image must be 'raise' or 'skip', got {on_bad_image!r}")
        self.on_bad_image = on_bad_image
        self._last_bad: Optional[tuple] = None
        self.dataset_name = dataset_name
        self.num_classes = num_classes
        # Skipped keys go to a file: DataLoader workers are separate processes, and
        # appending a line is atomic, so the main process can count them all.
        self._skip_log = osp.join(
            tempfile.gettempdir(),
            f'oaml_skipped_{os.getpid()}_{uuid.uuid4().hex[:12]}.txt') \
            if on_bad_image == 'skip' else None
        self._num = 0
        self._subset = None
        built = [TRANSFORMS.build(t) if isinstance(t, dict) else t
                 for t in pipeline]
        super().__init__(
            ann_file=ann_file,
            metainfo=metainfo,
            data_root=data_root,
            data_prefix=dict(),
            pipeline=Compose(built).transforms,
            test_mode=test_mode,
            lazy_init=lazy_init,
            serialize_data=False,
            max_refetch=max_refetch,
            indices=indices)

    # subclass interface --------------------------------------------------------
    @abc.abstractmethod
    def load_index(self) -> int:
        """Read the index (never the images); return the number of samples."""

    @abc.abstractmethod
    def get_info(self, i: int) -> dict:
        """The index entry of sample ``i`` as a results dict for the pipeline."""

    @abc.abstractmethod
    def load_sample(self, info: dict) -> bool:
        """Decode the sample into ``info``; False when skipped (bad image)."""

    # mmengine interface --------------------------------------------------------
    def full_init(self) -> None:
        if self._fully_initialized:
            return
        self._num = int(self.load_index())
        if self._indices is not None:
            if isinstance(self._indices, int):
                self._subset = np.arange(min(self._indices, self._num))
            else:
                self._subset = np.asarray(self._indices, np.int64)
        if self.num_classes is not None:
            self._metainfo['num_classes'] = int(self.num_classes)
        if self.dataset_name is not None:
            self._metainfo['dataset_name'] = self.dataset_name
        self._fully_initialized = True

    def _raw(self, idx: int) -> int:
        if self._subset is not None:
            return int(self._subset[idx])
        return int(idx)

    def __len__(self) -> int:
        if not self._fully_initialized:
            self.full_init()
        return int(self._subset.size) if self._subset is not None else self._num

    def get_data_info(self, idx: int) -> dict:
        if not self._fully_initialized:
            self.full_init()
        if idx < 0:
            idx += len(self)
        if not 0 <= idx < len(self):
            raise IndexError(f'index {idx} out of range for {len(self)} samples')
        info = self.get_info(self._raw(idx))
        info['sample_idx'] = idx
        if self.dataset_name is not None:
            info.setdefault('dataset_name', self.dataset_name)
        return info

    def __getitem__(self, idx: int) -> Any:
        if not self.test_mode:
            return super().__getitem__(idx)
        # An evaluation set cannot draw another sample for a skipped one (its
        # pairs and templates need every image): one line naming the image,
        # instead of mmengine's bare "should not get None".
        if not self._fully_initialized:
            self.full_init()
        data = self.prepare_data(idx)
        if data is None:
            key, why = self._last_bad or (idx, 'skipped')
            raise DataFormatError(
                self.ann_file or self.data_root, f'{key} was skipped '
                f"under on_bad_image='skip' ({why}), but an evaluation set "
                '(test_mode) needs every image: replace or remove it',
                record=key)
        return data

    def prepare_data(self, idx: int) -> Any:
        info = self.get_data_info(idx)
        if not self.load_sample(info):
            return None
        img = info['img']
        info['img_shape'] = img.shape[:2]
        info['ori_shape'] = img.shape[:2]
        return self.pipeline(info)

    # labels ----------------------------------------------------------------------
    def check_label(self, label: int, path: str, record: Any) -> int:
        """Return ``label`` as int, or raise if it is outside ``[0, num_classes)``.

        Raises:
            DataFormatError: The label is not a finite integer (a NaN or 2.5 in a
                float32 header), is at least 2**24 when stored as a float (float32
                cannot hold it exactly), or is outside ``[0, num_classes)``.
        """
        if isinstance(label, (float, np.floating)):
            value = float(label)
            if not np.isfinite(value) or value != np.floor(value) or \
                    abs(value) >= 2**24:
                raise DataFormatError(
                    path, f'label {value!r} is not an integer below 2**24 (the '
                    'largest float32 labels hold exactly)', record=record,
                    field='label')
        label = int(label)
        hi = MAX_LABEL if self.num_classes is None else self.num_classes
        if not 0 <= label < hi:
            raise DataFormatError(
                path, f'label {label} outside [0, {hi}) '
                f'({"num_classes" if self.num_classes else "int32 labels"})',
                record=record, field='label')
        return label

    def get_gt_labels(self) -> np.ndarray:
        """Identity label of every sample, without decoding images.

        Returns:
            np.ndarray: int64 [len(self)].
        """
        labels = self.raw_labels()
        if self._subset is not None:
            labels = labels[self._subset]
        return labels

    def raw_labels(self) -> np.ndarray:
        # Data sets without identities (verification pairs, IJB) cannot feed a
        # classifier or PKSampler: that is a config mistake, not a missing method.
        raise ConfigError(
            f'{type(self).__name__} has no identity labels; use a labelled '
            'training set (MXFaceDataset, FaceImageFolder, OcclusionMaskDataset '
            'with labels.txt) where labels are needed')

    def get_cat_ids(self, idx: int) -> list:
        return [int(self.get_gt_labels()[idx])]

    # bad images ------------------------------------------------------------------
    def decode(self, buf, path: str, key: Any) -> Optional[np.ndarray]:
        """:func:`decode_image` under this data set's bad-image policy."""
        try:
            return decode_image(buf, path, key)
        except DataFormatError as e:
            if self.on_bad_image == 'raise':
                raise
            self.bad_image(key, str(e))
            self._last_bad = (key, e.what)
            return None

    def bad_image(self, key: Any, why: str) -> None:
        """Log and count a skipped sample."""
        self._last_bad = (key, why)
        print_log(f'skipping undecodable image {key}: {why}',
                  logger='current', level=30)
        with open(self._skip_log, 'a') as f:
            f.write(f'{key}\n')

    def num_skipped(self) -> int:
        """Number of images skipped (in all worker processes) since the last reset."""
        if self._skip_log is None or not osp.exists(self._skip_log):
            return 0
        with open(self._skip_log) as f:
            return sum(1 for _ in f)

    def log_skipped(self, reset: bool = True) -> int:
        """Log the number of skipped images and optionally reset the count.

        Returns:
            int: The count.
        """
        n = self.num_skipped()
        if self._skip_log is not None:
            name = self.dataset_name or type(self).__name__
            print_log(f'{name}: {n} undecodable images skipped', logger='current',
                      level=30 if n else 20)
            if reset and osp.exists(self._skip_log):
                os.remove(self._skip_log)
        return n
