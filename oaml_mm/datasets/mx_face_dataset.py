"""MXNet ``.rec`` face training sets (MS1MV2, CASIA-WebFace, Glint360K) without mxnet.

Reads the insightface / AdaFace release layout described in ``SPEC.md`` §4 through
:class:`~oaml_mm.datasets.recordio.IndexedRecordReader`: record 0 with ``flag > 0`` is a
header whose label ``(N + 1, end)`` delimits the images (keys ``1..N``) and the identity
records; without such a header every indexed record is an image ("plain" layout). The
image label is the header label, or its first element when the label is a vector.
"""
import os.path as osp
from typing import Optional

import numpy as np

from oaml_mm.errors import DataFormatError
from oaml_mm.registry import DATASETS

from .base_face_dataset import BaseFaceDataset
from .recordio import IndexedRecordReader, unpack_record

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
            with open(self.property_path) as f:
                text = f.read().strip()
            try:
                self.num_classes = int(text.split(',')[0])
            except ValueError:
                raise DataFormatError(
                    self.property_path, f'expected "num_classes,H,W", got '
                    f'{text[:40]!r}', field='num_classes') from None
        self._id_keys = None
        header0 = None
        if 0 in self.reader:
            header0, payload0 = unpack_record(
                self.reader.read(0), self.rec_path, 0)
        # A header record carries two labels and no image.
        if header0 is not None and header0.flag >= 2 and not payload0:
            first, end = int(header0.label[0]), int(header0.label[1])
            if first < 1 or end < first:
                raise DataFormatError(
                    self.rec_path, f'header label ({first}, {end}) is not an '
                    'image/identity key range (expected 1 <= N+1 <= end)',
                    record=0, field='label')
            self.layout = 'header'
            self._keys = np.arange(1, first, dtype=np.int64)
            self._id_keys = np.arange(first, end, dtype=np.int64)
        else:
            self.layout = 'plain'
            self._keys = np.sort(self.reader.keys)
        return int(self._keys.size)

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
            for id_key in self._id_keys:
                h = self.reader.read_header(int(id_key))
                if h.flag < 2:
                    raise DataFormatError(
                        self.rec_path, 'identity record has no (start, end) '
                        'label', record=int(id_key), field='label')
                start, end = int(h.label[0]), int(h.label[1])
                if not 1 <= start <= end <= self._keys.size + 1:
                    raise DataFormatError(
                        self.rec_path, f'identity range ({start}, {end}) outside '
                        f'the image keys 1..{self._keys.size}',
                        record=int(id_key), field='label')
                if end > start:
                    labels[start - 1:end - 1] = label_of(start)
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
