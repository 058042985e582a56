"""MXNet RecordIO (``.rec`` + ``.idx``) without mxnet.

The byte layout is the one of dmlc-core's ``RecordIOWriter`` as used by mxnet's
``MXIndexedRecordIO`` and by insightface / AdaFace to ship MS1MV2, CASIA-WebFace and
Glint360K (``train.rec``, ``train.idx``, ``property``). See docs/datasets.md:

* a record is ``uint32 magic 0xced7230a``, ``uint32 lrecord`` (low 29 bits: length,
  top 3 bits: continuation flag), the payload, then zero padding to 4 bytes;
* a payload that contains the magic word at a 4-byte aligned position is split there
  into parts (flags 1 = first, 2 = middle, 3 = last); the magic word itself is dropped
  and re-inserted by the reader;
* the payload of an image record starts with an ``IRHeader`` packed as ``<IfQQ``
  (flag, label, id, id2; 24 bytes); when ``flag > 0`` that many float32 labels follow
  and replace ``label``;
* the ``.idx`` file is text, one ``key\\toffset`` line per record.

The insightface layout (:func:`write_insightface_rec`) puts a header record at key 0
(``flag=2``, ``label=(N + 1, N + 1 + num_ids)``), the images at keys ``1..N`` sorted by
label, then one record per identity at keys ``N + 1 ...`` whose label is the identity's
image key range ``(start, end)``.
"""
import os
import os.path as osp
import struct
from collections import namedtuple
from typing import Iterable, Optional, Sequence, Tuple, Union

import numpy as np

from oaml_mm.errors import DataFormatError, MissingFileError

__all__ = [
    'IRHeader', 'RECORDIO_MAGIC', 'pack_record', 'unpack_record',
    'encode_recordio', 'IndexedRecordReader', 'IndexedRecordWriter',
    'write_insightface_rec', 'float32_integers', 'resolve_float32_key'
]

RECORDIO_MAGIC = 0xced7230a
_MAGIC_BYTES = struct.pack('<I', RECORDIO_MAGIC)
_LEN_MASK = (1 << 29) - 1
_IR_FORMAT = '<IfQQ'
_IR_SIZE = struct.calcsize(_IR_FORMAT)  # 24

IRHeader = namedtuple('IRHeader', ['flag', 'label', 'id', 'id2'])
"""Header of an image record: ``flag`` (number of vector labels, 0 for a scalar),
``label`` (float, or a float32 array when ``flag > 0``), ``id`` and ``id2``."""


def pack_record(header: IRHeader, payload: bytes) -> bytes:
    """Pack an :data:`IRHeader` and a payload the way ``mx.recordio.pack`` does.

    A scalar label is stored in the header (``flag=0``); a sequence label is stored as
    ``len(label)`` float32 values after the header (``flag=len(label)``, header label
    0).

    Args:
        header (IRHeader): ``(flag, label, id, id2)``; ``flag`` is recomputed.
        payload (bytes): Usually JPEG bytes; may be empty.

    Returns:
        bytes: The record payload (without the RecordIO framing).

    Examples:
        >>> buf = pack_record(IRHeader(0, 3.0, 7, 0), b'jpg')
        >>> unpack_record(buf)[0].label, len(buf)
        (3.0, 27)
    """
    header = IRHeader(*header)
    label = header.label
    if np.ndim(label) == 0:
        head = struct.pack(_IR_FORMAT, 0, float(label), int(header.id),
                           int(header.id2))
        return head + bytes(payload)
    labels = np.asarray(label, dtype='<f4').ravel()
    head = struct.pack(_IR_FORMAT, labels.size, 0.0, int(header.id),
                       int(header.id2))
    return head + labels.tobytes() + bytes(payload)


def unpack_record(buf: bytes,
                  path: str = '<buffer>',
                  key: Optional[int] = None) -> Tuple[IRHeader, bytes]:
    """Split a record payload into its :data:`IRHeader` and the rest.

    Args:
        buf (bytes): A payload as returned by :meth:`IndexedRecordReader.read`.
        path (str): File name used in error messages.
        key (int, optional): Record key used in error messages.

    Returns:
        tuple: ``(IRHeader, payload)``; ``header.label`` is a float32 array when
        ``header.flag > 0``, else a float.

    Raises:
        DataFormatError: The buffer is shorter than its header says.
    """
    if len(buf) < _IR_SIZE:
        raise DataFormatError(
            path, f'record payload has {len(buf)} bytes, expected at least '
            f'{_IR_SIZE} for the IRHeader', record=key, field='IRHeader')
    flag, label, id1, id2 = struct.unpack_from(_IR_FORMAT, buf, 0)
    rest = memoryview(buf)[_IR_SIZE:]
    if flag > 0:
        if len(rest) < 4 * flag:
            raise DataFormatError(
                path, f'IRHeader flag={flag} announces {flag} float32 labels '
                f'({4 * flag} bytes) but only {len(rest)} bytes follow',
                record=key, field='label')
        label = np.frombuffer(rest[:4 * flag], dtype='<f4').copy()
        rest = rest[4 * flag:]
    return IRHeader(flag, label, id1, id2), rest.tobytes()


def encode_recordio(buf: bytes) -> bytes:
    """Frame one payload as dmlc-core's ``RecordIOWriter::WriteRecord`` does.

    Args:
        buf (bytes): The payload.

    Returns:
        bytes: Magic, lrecord, payload (split at aligned magic words), zero padding.
    """
    buf = bytes(buf)
    size = len(buf)
    if size >= (1 << 29):
        raise ValueError(f'a RecordIO record holds < 2**29 bytes, got {size}')
    out = []
    start = 0
    # Only aligned occurrences split the record, as in dmlc-core: the reader can then
    # re-insert the dropped magic word between parts.
    pos = buf.find(_MAGIC_BYTES)
    while pos != -1 and pos + 4 <= (size // 4) * 4:
        if pos % 4 == 0 and pos >= start:
            cflag = 1 if start == 0 else 2
            out.append(_MAGIC_BYTES)
            out.append(struct.pack('<I', (cflag << 29) | (pos - start)))
            out.append(buf[start:pos])
            start = pos + 4
            pos = buf.find(_MAGIC_BYTES, start)
        else:
            pos = buf.find(_MAGIC_BYTES, pos + 1)
    cflag = 3 if start != 0 else 0
    out.append(_MAGIC_BYTES)
    out.append(struct.pack('<I', (cflag << 29) | (size - start)))
    out.append(buf[start:])
    pad = (-size) % 4
    if pad:
        out.append(b'\0' * pad)
    return b''.join(out)


def _read_idx(idx_path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Parse an ``.idx`` file into (keys, offsets) int64 arrays in file order."""
    keys = []
    offsets = []
    with open(idx_path, 'rb') as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(b'\t')
            if len(parts) != 2:
                parts = line.split()
            try:
                key, offset = int(parts[0]), int(parts[1])
            except (ValueError, IndexError):
                raise DataFormatError(
                    idx_path, f'expected "key<TAB>offset" with two integers, '
                    f'got {line[:60]!r}', record=f'line {lineno}') from None
            if offset < 0:
                raise DataFormatError(
                    idx_path, f'offset {offset} is negative',
                    record=f'line {lineno}', field='offset')
            if not (-2**63 <= key < 2**63 and offset < 2**63):
                raise DataFormatError(
                    idx_path, f'key or offset out of the 64-bit range: '
                    f'{line[:60]!r}', record=f'line {lineno}')
            keys.append(key)
            offsets.append(offset)
    return np.asarray(keys, np.int64), np.asarray(offsets, np.int64)


class IndexedRecordReader:
    """Random access to a ``.rec`` file through its ``.idx`` file.

    Only the index is held in memory (two int64 arrays). The file handle is opened
    lazily and reopened when the process id changes, so one reader object can be
    shared by DataLoader workers (fork or spawn) and pickled.

    Args:
        rec_path (str): The ``.rec`` file.
        idx_path (str): The ``.idx`` file; defaults to ``rec_path`` with ``.idx``.

    Examples:
        >>> reader = IndexedRecordReader('train.rec', 'train.idx')  # doctest: +SKIP
        >>> header, jpeg = unpack_record(reader.read(1))  # doctest: +SKIP
    """

    def __init__(self, rec_path: str, idx_path: Optional[str] = None) -> None:
        self.rec_path = str(rec_path)
        self.idx_path = str(idx_path) if idx_path is not None else \
            osp.splitext(self.rec_path)[0] + '.idx'
        for path, what in ((self.rec_path, 'RecordIO data file'),
                           (self.idx_path, 'RecordIO index file')):
            if not osp.isfile(path):
                raise MissingFileError(path, f'the {what} of an MXNet dataset')
        keys, offsets = _read_idx(self.idx_path)
        self.file_size = osp.getsize(self.rec_path)
        bad = np.nonzero(offsets + 8 > self.file_size)[0]
        if bad.size:
            i = int(bad[0])
            raise DataFormatError(
                self.idx_path, f'offset {int(offsets[i])} is past the end of '
                f'{self.rec_path} ({self.file_size} bytes); expected an offset '
                'of a record inside the file', record=int(keys[i]),
                field='offset')
        self.keys = keys
        self.offsets = offsets
        order = np.argsort(keys, kind='stable')
        self._sorted_keys = keys[order]
        self._sorted_offsets = offsets[order]
        dup = np.nonzero(self._sorted_keys[1:] == self._sorted_keys[:-1])[0]
        if dup.size:
            # Two lines for one key would make the data set yield a record twice
            # (or hide one of two records): the index is damaged either way.
            key = int(self._sorted_keys[dup[0]])
            lines = (np.nonzero(keys == key)[0][:2] + 1).tolist()
            raise DataFormatError(
                self.idx_path, f'key {key} is listed twice (entries {lines[0]} and '
                f'{lines[1]}); expected each key once', record=key, field='key')
        self._uniq_offsets = np.unique(offsets)
        self._fd = None
        self._pid = None

    def __len__(self) -> int:
        return int(self.keys.size)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state['_fd'] = None
        state['_pid'] = None
        return state

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the file handle of this process (it reopens on the next read)."""
        fd = getattr(self, '_fd', None)
        if fd is not None and self._pid == os.getpid():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fd = None
        self._pid = None

    def _file(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._pid != pid:
            # A descriptor inherited through fork shares its offset with the parent;
            # pread does not use the offset, but a private descriptor per process
            # keeps workers independent of the parent's lifetime.
            self._fd = os.open(self.rec_path, os.O_RDONLY | getattr(os, 'O_BINARY', 0))
            self._pid = pid
        return self._fd

    def _pread(self, n: int, offset: int) -> bytes:
        fd = self._file()
        if hasattr(os, 'pread'):
            return os.pread(fd, n, offset)
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, n)

    def __contains__(self, key: int) -> bool:
        i = int(np.searchsorted(self._sorted_keys, key))
        return i < self._sorted_keys.size and self._sorted_keys[i] == key

    def offset_of(self, key: int) -> int:
        """File offset of record ``key``.

        Raises:
            DataFormatError: The key is not in the index.
        """
        i = int(np.searchsorted(self._sorted_keys, key))
        if i >= self._sorted_keys.size or self._sorted_keys[i] != key:
            raise DataFormatError(
                self.idx_path, 'key not in the index', record=int(key))
        return int(self._sorted_offsets[i])

    def read_at(self, offset: int, key: Union[int, str, None] = None,
                max_bytes: Optional[int] = None) -> bytes:
        """Read the record that starts at ``offset``, joining continuation parts.

        Args:
            offset (int): Byte offset of the record's magic word.
            key (int, optional): Record key, used in error messages.
            max_bytes (int, optional): Read only the first bytes of a record that is
                not split (enough for its header); a split record is read whole.

        Returns:
            bytes: The payload.

        Raises:
            DataFormatError: Bad magic number, truncated record or a broken chain of
                continuation parts.
        """
        parts = []
        expect_more = False
        pos = offset
        while True:
            head = self._pread(8, pos)
            if len(head) < 8:
                raise DataFormatError(
                    self.rec_path, f'truncated record at offset {pos}: '
                    f'{len(head)} of the 8 header bytes present',
                    record=key, field='lrecord')
            magic, lrec = struct.unpack('<II', head)
            if magic != RECORDIO_MAGIC:
                raise DataFormatError(
                    self.rec_path, f'bad magic number 0x{magic:08x} at offset '
                    f'{pos}, expected 0x{RECORDIO_MAGIC:08x}', record=key,
                    field='magic')
            cflag = lrec >> 29
            length = lrec & _LEN_MASK
            if expect_more and cflag not in (2, 3):
                raise DataFormatError(
                    self.rec_path, f'continuation part at offset {pos} has '
                    f'flag {cflag}, expected 2 or 3', record=key,
                    field='lrecord')
            if not expect_more and cflag not in (0, 1):
                raise DataFormatError(
                    self.rec_path, f'record at offset {pos} starts with flag '
                    f'{cflag}, expected 0 or 1', record=key, field='lrecord')
            want = length
            whole = max_bytes is None or cflag != 0
            if not whole:
                want = min(length, max_bytes)
            # Checked before reading: a damaged length must not allocate 512 MiB.
            avail = max(self.file_size - pos - 8, 0)
            data = self._pread(want, pos + 8) if want <= avail else b''
            if len(data) < want:
                raise DataFormatError(
                    self.rec_path, f'truncated record at offset {pos}: header '
                    f'says {length} bytes, only {min(avail, length)} present '
                    f'before the end of the file ({self.file_size} bytes)',
                    record=key, field='payload')
            parts.append(data)
            if cflag in (0, 3):
                if whole:
                    self._check_end(pos, pos + 8 + ((length + 3) & ~3), key)
                break
            parts.append(_MAGIC_BYTES)
            expect_more = True
            pos += 8 + ((length + 3) & ~3)
        return parts[0] if len(parts) == 1 else b''.join(parts)

    def _check_end(self, pos: int, end: int, key) -> None:
        """Raise unless a record ending at ``end`` is followed by a record or EOF.

        The format has no checksum; a damaged length field is caught because the
        next indexed record (or an unindexed one, or the end of the file) must
        start right after the padding.
        """
        i = int(np.searchsorted(self._uniq_offsets, pos, side='right'))
        nxt = int(self._uniq_offsets[i]) if i < self._uniq_offsets.size \
            else self.file_size
        if end == nxt or (end >= self.file_size and nxt == self.file_size):
            return
        head = self._pread(8, end) if end <= nxt else b''
        # An unindexed record may follow, but it must *start* a record: a
        # continuation part there (flag 2 or 3) means this record's own flag was
        # damaged and it was cut short.
        if end > nxt or head[:4] != _MAGIC_BYTES or len(head) < 8 or \
                struct.unpack_from('<I', head, 4)[0] >> 29 in (2, 3):
            raise DataFormatError(
                self.rec_path, f'record at offset {pos} ends at {end}, where '
                f'no record starts (next indexed record at {nxt}); its length '
                'or continuation flag is damaged', record=key, field='lrecord')

    def read(self, key: int) -> bytes:
        """Payload of record ``key`` (see :func:`unpack_record`)."""
        return self.read_at(self.offset_of(key), key=key)

    def record_kind(self, key: int) -> str:
        """What record ``key`` is, reading only its first bytes.

        Returns:
            str: ``'missing'`` (not in the index), ``'identity'`` (``flag >= 2``
            vector label and no image bytes: the header or identity records of the
            insightface layout) or ``'image'``.
        """
        if key not in self:
            return 'missing'
        buf = self.read_at(self.offset_of(key), key=key, max_bytes=64)
        header, payload = _unpack_header_prefix(buf, self, key)
        if header.flag >= 2 and not payload:
            # read_at may have cut the payload at 64 bytes: an identity record's
            # whole length is its header and labels.
            length = struct.unpack_from('<I', self._pread(8, self.offset_of(key)),
                                        4)[0] & _LEN_MASK
            if length == _IR_SIZE + 4 * header.flag:
                return 'identity'
        return 'image'

    def read_header(self, key: int) -> IRHeader:
        """The :data:`IRHeader` of record ``key``, reading only its first bytes."""
        # 24 header bytes plus room for the two labels of the insightface layout;
        # vector labels longer than that trigger a full read below.
        buf = self.read_at(self.offset_of(key), key=key, max_bytes=64)
        header, _ = _unpack_header_prefix(buf, self, key)
        return header


def _unpack_header_prefix(buf: bytes, reader: IndexedRecordReader,
                          key: int) -> Tuple[IRHeader, bytes]:
    if len(buf) >= _IR_SIZE:
        flag = struct.unpack_from('<I', buf, 0)[0]
        if _IR_SIZE + 4 * flag > len(buf):
            buf = reader.read(key)
    return unpack_record(buf, reader.rec_path, key)


def float32_integers(value: float, lo: int, hi: int) -> np.ndarray:
    """The integers in ``[lo, hi]`` that float32 rounds to ``value``.

    RecordIO headers store keys and counts as float32, which holds integers exactly
    only below 2**24 (16,777,216); above it several integers share one float32
    (2 between 2**24 and 2**25, 4 up to 2**26, ...). The candidates are then told
    apart by the records themselves (:func:`resolve_float32_key`).

    Args:
        value (float): The float32 value read from a header.
        lo (int): Smallest admissible integer.
        hi (int): Largest admissible integer.

    Returns:
        np.ndarray: int64 candidates, ascending (empty when none fits).
    """
    v = np.float32(value)
    if not np.isfinite(v):
        return np.zeros(0, np.int64)
    x = float(v)
    if x < lo - 2**40 or x > hi + 2**40:
        return np.zeros(0, np.int64)
    spacing = float(np.spacing(np.float32(abs(x)))) if x else 1.0
    first = max(int(np.floor(x - spacing)), lo)
    last = min(int(np.ceil(x + spacing)), hi)
    if last < first:
        return np.zeros(0, np.int64)
    cand = np.arange(first, last + 1, dtype=np.int64)
    return cand[cand.astype(np.float32) == v]


def resolve_float32_key(value: float, lo: int, hi: int, fits,
                        path: str = '<buffer>', record=None,
                        field: str = 'label') -> int:
    """The one integer a float32 header value stands for, checked by ``fits``.

    Args:
        value (float): The float32 value read from a header.
        lo (int): Smallest admissible integer.
        hi (int): Largest admissible integer.
        fits (callable): ``fits(n) -> bool``: whether the records agree with ``n``
            (for example, "key ``n - 1`` is an image and key ``n`` an identity
            record"). Called only when ``value`` is ambiguous (at or above 2**24).
        path (str): File for the error message.
        record: Record for the error message.
        field (str): Field for the error message.

    Returns:
        int: The integer.

    Raises:
        DataFormatError: ``value`` is not finite, not an integer, outside
            ``[lo, hi]``, or the records fit none or several of the candidates.
    """
    cand = float32_integers(value, lo, hi)
    if cand.size == 0:
        raise DataFormatError(
            path, f'{field} {float(value)!r} is not an integer in [{lo}, {hi}] '
            '(what the index file admits)', record=record, field=field)
    if cand.size == 1:
        return int(cand[0])
    good = [int(c) for c in cand if fits(int(c))]
    if len(good) != 1:
        raise DataFormatError(
            path, f'{field} {float(value)!r} is a float32 rounding of one of '
            f'{cand.tolist()}, and the records agree with {len(good)} of them '
            f'({good}); expected exactly one', record=record, field=field)
    return good[0]


class IndexedRecordWriter:
    """Write ``.rec`` + ``.idx`` byte for byte as ``mx.recordio.MXIndexedRecordIO``.

    Args:
        rec_path (str): The ``.rec`` file to create (overwritten).
        idx_path (str): The ``.idx`` file to create (overwritten).

    Examples:
        >>> with IndexedRecordWriter('a.rec', 'a.idx') as w:  # doctest: +SKIP
        ...     w.write_idx(0, pack_record(IRHeader(0, 1.0, 0, 0), jpeg))
    """

    def __init__(self, rec_path: str, idx_path: str) -> None:
        self.rec_path = str(rec_path)
        self.idx_path = str(idx_path)
        self._frec = open(self.rec_path, 'wb')
        self._fidx = open(self.idx_path, 'w', newline='\n')

    def tell(self) -> int:
        return self._frec.tell()

    def write_idx(self, key: int, buf: bytes) -> None:
        """Append one record and its index line ``key\\toffset``."""
        pos = self._frec.tell()
        self._frec.write(encode_recordio(buf))
        self._fidx.write(f'{int(key)}\t{pos}\n')

    def close(self) -> None:
        if not self._frec.closed:
            self._frec.close()
        if not self._fidx.closed:
            self._fidx.close()

    def __enter__(self) -> 'IndexedRecordWriter':
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_insightface_rec(out_dir: str,
                          samples: Iterable[Tuple[bytes, int]],
                          num_classes: int,
                          image_size: Sequence[int] = (112, 112)) -> int:
    """Write ``train.rec``, ``train.idx`` and ``property`` in the insightface layout.

    Images are stored sorted by label (stable), so each identity occupies one
    contiguous key range, which the identity records describe.

    Args:
        out_dir (str): Output folder (created if missing).
        samples (Iterable[tuple]): ``(jpeg_bytes, label)`` pairs, labels in
            ``[0, num_classes)``.
        num_classes (int): Number of identities written to ``property``.
        image_size (Sequence[int]): ``(height, width)`` written to ``property``.

    Returns:
        int: Number of images written.

    Raises:
        ValueError: A label is outside ``[0, num_classes)``.
    """
    os.makedirs(out_dir, exist_ok=True)
    items = []
    for jpeg, label in samples:
        label = int(label)
        if not 0 <= label < num_classes:
            raise ValueError(
                f'label {label} outside [0, {num_classes}) in sample '
                f'{len(items)}')
        items.append((label, bytes(jpeg)))
    items.sort(key=lambda x: x[0])
    n = len(items)
    ranges = {}
    for i, (label, _) in enumerate(items):
        key = i + 1
        start, _end = ranges.get(label, (key, key))
        ranges[label] = (start, key + 1)
    labels_present = sorted(ranges)
    id_start = n + 1
    id_end = id_start + len(labels_present)
    with IndexedRecordWriter(
            osp.join(out_dir, 'train.rec'), osp.join(out_dir, 'train.idx')) as w:
        w.write_idx(0, pack_record(IRHeader(0, (id_start, id_end), 0, 0), b''))
        for i, (label, jpeg) in enumerate(items):
            w.write_idx(i + 1, pack_record(IRHeader(0, float(label), i + 1, 0),
                                           jpeg))
        for j, label in enumerate(labels_present):
            key = id_start + j
            w.write_idx(key, pack_record(IRHeader(0, ranges[label], key, 0), b''))
    with open(osp.join(out_dir, 'property'), 'w') as f:
        f.write(f'{int(num_classes)},{int(image_size[0])},{int(image_size[1])}')
    return n
