"""MXNet ``.rec`` face training sets (MS1MV2, CASIA-WebFace, Glint360K) without mxnet.

Reads the insightface / AdaFace release layout described in docs/datasets.md through
:class:`~oaml_mm.datasets.recordio.IndexedRecordReader`: record 0 with ``flag > 0`` is a
header whose label ``(N + 1, end)`` delimits the images (keys ``1..N``) and the identity
records; without such a header every indexed record is an image ("plain" layout). The
image label is the header label, or its first element when the label is a vector.
"""
import os.path as osp
from typing import Optional, Tuple

import numpy as np

from oaml_mm.errors import DataFormatError
from oaml_mm.registry import DATASETS
from .base_face_dataset import MAX_LABEL, BaseFaceDataset, read_text
from .recordio import (IndexedRecordReader, float32_integers,
                       resolve_float32_key, unpack_record)

__all__ = ['MXFaceDataset']


@DATASETS.register_module()
class MXFaceDataset(BaseFaceDataset):
    """Face images from ``train.rec`` / ``train.idx`` (+ ``property``).

    Memory is proportional to the index (two int64 arrays); one file handle is opened
    per process on first read. Images decode to RGB.

    Examples:
        >>> train_dataset = dict(
        ...     type='MXFaceDataset', data_root='data/faces_emore',
        ...     pipeline=[dict(type='FaceAugmenter'), dict(type='FaceRandomFlip'),
        ...               dict(type='PackFaceInputs')])

    Args:
        data_root (str): Folder with the three files.
        rec_file (str): Data file name. Defaults to ``'train.rec'``.
        idx_file (str): Index file name. Defaults to ``'train.idx'``.
        property_file (str): ``num_classes,H,W`` file; ``num_classes`` overrides it.
        **kwargs: See :class:`~oaml_mm.datasets.base_face_dataset.BaseFaceDataset`.
    """

    def __init__(self,
                 data_root: str,
                 rec_file: str = 'train.rec',
                 idx_file: str = 'train.idx',
                 property_file: str = 'property',
                 num_classes: Optional[int] = None,
                 **kwargs) -> None:
        self.rec_path = osp.join(data_root, rec_file)
        self.idx_path = osp.join(data_root, idx_file)
        self.property_path = osp.join(data_root, property_file)
        self.reader = None
        self._keys = None
        self._labels = None
        self.layout = None
        kwargs.setdefault('dataset_name', osp.basename(osp.normpath(data_root)))
        super().__init__(data_root=data_root, num_classes=num_classes, **kwargs)

    def load_index(self) -> int:
        self.reader = IndexedRecordReader(self.rec_path, self.idx_path)
        if self.num_classes is None and osp.isfile(self.property_path):
            text = read_text(self.property_path, '"num_classes,H,W"').strip()
            try:
                self.num_classes = int(text.split(',')[0])
                if not 0 < self.num_classes <= MAX_LABEL:
                    raise ValueError
            except ValueError:
                raise DataFormatError(
                    self.property_path, f'expected "num_classes,H,W" with '
                    f'0 < num_classes <= {MAX_LABEL}, got {text[:40]!r}',
                    field='num_classes') from None
        self._id_keys = None
        header0 = None
        if 0 in self.reader:
            header0, payload0 = unpack_record(
                self.reader.read(0), self.rec_path, 0)
        # A header record carries two labels and no image.
        if header0 is not None and header0.flag >= 2 and not payload0:
            first, end = self._resolve_header(header0)
            if end > len(self.reader):
                # Keys 0 .. end - 1 must all be indexed: this bounds the key
                # arrays by the size of the index file, whatever the header says.
                raise DataFormatError(
                    self.rec_path, f'header key range 0 .. {end - 1} needs '
                    f'{end} records, but {self.idx_path} lists '
                    f'{len(self.reader)}', record=0, field='label')
            self.layout = 'header'
            self._keys = np.arange(1, first, dtype=np.int64)
            self._id_keys = np.arange(first, end, dtype=np.int64)
        else:
            self.layout = 'plain'
            self._keys = np.sort(self.reader.keys)
        return int(self._keys.size)

    def _resolve_header(self, header0) -> Tuple[int, int]:
        """Exact ``(N + 1, end)`` of the header record, checked against the index.

        Both are float32 in the file: above 2**24 (Glint360K has 17.2M images) the
        stored value is rounded, so the candidates are told apart by the records:
        key ``N`` is the last image and key ``N + 1`` the first identity record;
        key ``end - 1`` is the last identity record. Both are bounded by the
        number of records in the index before anything is allocated.
        """
        reader = self.reader
        hi = int(reader.keys.max()) + 1
        if not all(np.isfinite(float(v)) for v in header0.label[:2]):
            raise DataFormatError(
                self.rec_path, f'header label {header0.label[:2].tolist()} is not '
                'finite; expected the key range (N + 1, end)', record=0,
                field='label')

        def first_fits(c):
            return (c == 1 or reader.record_kind(c - 1) == 'image') and \
                reader.record_kind(c) in ('identity', 'missing')

        first = resolve_float32_key(header0.label[0], 1, hi, first_fits,
                                    self.rec_path, 0, 'header label N + 1')

        def end_fits(c):
            return (c == first or reader.record_kind(c - 1) == 'identity') and \
                reader.record_kind(c) != 'identity'

        end = resolve_float32_key(header0.label[1], first, hi, end_fits,
                                  self.rec_path, 0, 'header label end')
        # Exact (below 2**24) values are checked against the records too: a
        # header naming the wrong range would silently drop or mislabel images.
        if not (first_fits(first) and end_fits(end)):
            raise DataFormatError(
                self.rec_path, f'header label (N + 1, end) = ({first}, {end}) '
                'disagrees with the records (expected key N + 1 to be the first '
                'identity record after the images, and key end - 1 the last)',
                record=0, field='label')
        return first, end

    def get_info(self, i: int) -> dict:
        key = int(self._keys[i])
        return dict(img_path=self.rec_path, key=key)

    def load_sample(self, info: dict) -> bool:
        key = info['key']
        header, payload = unpack_record(self.reader.read(key), self.rec_path,
                                        key)
        label = header.label if header.flag == 0 else header.label[0]
        info['gt_label'] = self.check_label(label, self.rec_path, key)
        img = self.decode(payload, self.rec_path, key)
        if img is None:
            return False
        info['img'] = img
        return True

    def _resolve_range(self, label, id_key: int, prev_end: int, n: int,
                       label_of) -> Tuple[int, int]:
        """Exact ``(start, end)`` of an identity record (float32 in the file).

        Below 2**24 the stored values are exact. Above, identities are contiguous
        runs of one label: ``start`` is the previous identity's ``end`` when that is
        a candidate, else the candidate where the label changes; ``end`` is the
        candidate after which the identity's label stops.
        """
        where = dict(path=self.rec_path, record=id_key)

        def boundary(c):
            return c in (1, n + 1) or label_of(c - 1) != label_of(c)

        cand = float32_integers(label[0], 1, n + 1)
        if prev_end in cand.tolist():
            start = prev_end
        else:
            start = resolve_float32_key(label[0], 1, n + 1, boundary,
                                        field='identity start', **where)
        if start <= n:
            own = label_of(start)

            def end_fits(c):
                return label_of(c - 1) == own and (c == n + 1 or
                                                   label_of(c) != own)
        else:
            end_fits = boundary
        end = resolve_float32_key(label[1], start, n + 1, end_fits,
                                  field='identity end', **where)
        return start, end

    def raw_labels(self) -> np.ndarray:
        """Labels of all images from record headers only (cached).

        In the header layout one image header per identity record is read; otherwise
        every image header (a few bytes each).
        """
        if self._labels is not None:
            return self._labels
        if not self._fully_initialized:
            self.full_init()
        labels = np.full(self._keys.size, -1, np.int64)

        def label_of(key):
            h = self.reader.read_header(int(key))
            lab = h.label if h.flag == 0 else h.label[0]
            return self.check_label(lab, self.rec_path, int(key))

        if self.layout == 'header' and self._id_keys.size:
            n = int(self._keys.size)
            prev_end = 1
            for id_key in self._id_keys:
                id_key = int(id_key)
                h = self.reader.read_header(id_key)
                if h.flag < 2:
                    raise DataFormatError(
                        self.rec_path, 'identity record has no (start, end) '
                        'label', record=id_key, field='label')
                start, end = self._resolve_range(h.label, id_key, prev_end, n,
                                                 label_of)
                if end > start:
                    labels[start - 1:end - 1] = label_of(start)
                prev_end = end
            # Images no identity record covers keep their own header label.
            for i in np.nonzero(labels < 0)[0]:
                labels[i] = label_of(self._keys[i])
        else:
            for i, key in enumerate(self._keys):
                labels[i] = label_of(key)
        self._labels = labels
        if self.num_classes is None and labels.size:
            self.num_classes = int(labels.max()) + 1
            self._metainfo['num_classes'] = self.num_classes
        return labels
