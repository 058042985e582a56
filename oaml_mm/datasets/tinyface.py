"""TinyFace test set: native low-resolution probes against a gallery with distractors.

TinyFace (Cheng, Zhu & Gong, "Low-Resolution Face Recognition", ACCV 2018,
https://qmul-tinyface.github.io/) ships its closed-set identification protocol as three
folders, ``Testing_Set/Probe``, ``Testing_Set/Gallery_Match`` and
``Testing_Set/Gallery_Distractor``. A probe or gallery-match image's subject is the
number before the first ``_`` of its file name (``12_3.jpg`` -> 12), as the public
evaluation code of AdaFace (``validation_lq/tinyface_helper.py``) reads it; distractors
belong to no probe subject. The images are tiny (about 20 x 16 pixels on average) and
are resized to the model's input here.
"""
import os
import os.path as osp
from typing import Optional, Tuple

import cv2
import numpy as np

from oaml_mm.errors import DataFormatError, MissingFileError
from oaml_mm.registry import DATASETS
from .base_face_dataset import BaseFaceDataset

__all__ = ['TinyFaceDataset', 'TINYFACE_ROLES', 'tinyface_role_subject']

#: Folder of each role, in the order the samples are listed.
TINYFACE_ROLES = ('Probe', 'Gallery_Match', 'Gallery_Distractor')
_EXTS = ('.jpg', '.jpeg', '.png')
DISTRACTOR = -1


def tinyface_role_subject(key: str) -> Tuple[str, int]:
    """``('Probe'|'Gallery_Match'|'Gallery_Distractor', subject)`` of a sample key.

    The key is the image path relative to the test folder (``Probe/12_3.jpg``);
    distractors get subject -1.

    Raises:
        DataFormatError: Unknown folder, or a probe / match file name that does not
            start with ``<subject>_``.

    Examples:
        >>> tinyface_role_subject('Gallery_Match/12_3.jpg')
        ('Gallery_Match', 12)
    """
    role, _, name = str(key).replace('\\', '/').partition('/')
    if role not in TINYFACE_ROLES:
        raise DataFormatError(key, f'folder {role!r} is not one of {TINYFACE_ROLES}')
    if role == 'Gallery_Distractor':
        return role, DISTRACTOR
    head = osp.basename(name).split('_')[0]
    if not head.isdigit():
        raise DataFormatError(
            key, 'a TinyFace probe / gallery file name starts with its subject '
            'number and "_" (e.g. 12_3.jpg)', field='file name')
    return role, int(head)


@DATASETS.register_module()
class TinyFaceDataset(BaseFaceDataset):
    """TinyFace's identification test set (probes, gallery matches, distractors).

    Each sample's ``key`` is its path below ``test_dir`` (``Probe/12_3.jpg``), which is
    all :class:`~oaml_mm.evaluation.metrics.TinyFaceMetric` needs;
    ``get_gt_labels()`` gives the subjects (-1 for distractors).

    Examples:
        >>> tinyface = dict(type='TinyFaceDataset', data_root='data/tinyface',
        ...                 pipeline=[dict(type='PackFaceInputs')])

    Args:
        data_root (str): The release folder (holding ``Testing_Set``).
        test_dir (str): Folder holding the three role folders, relative to
            ``data_root``. ``'Testing_Set'`` for the release; an aligned copy in
            the same layout (e.g. ``aligned_pad_0.1_pad_high``) works as well.
        img_size (tuple, optional): ``(h, w)`` every image is resized to (bicubic).
            Defaults to (112, 112); None keeps the native size.
        **kwargs: See :class:`~oaml_mm.datasets.base_face_dataset.BaseFaceDataset`.

    Raises:
        MissingFileError: A role folder is missing.
        DataFormatError: A probe / match file name has no subject number.
    """

    def __init__(self, data_root: str = '', test_dir: str = 'Testing_Set',
                 img_size: Optional[Tuple[int, int]] = (112, 112),
                 **kwargs) -> None:
        self.test_dir = test_dir
        self.img_size = tuple(img_size) if img_size is not None else None
        self._keys = None
        self._labels = None
        kwargs.setdefault('test_mode', True)
        kwargs.setdefault('dataset_name', 'tinyface')
        super().__init__(data_root=data_root, **kwargs)

    @property
    def root(self) -> str:
        return osp.join(self.data_root, self.test_dir)

    def load_index(self) -> int:
        keys, labels = [], []
        for role in TINYFACE_ROLES:
            folder = osp.join(self.root, role)
            if not osp.isdir(folder):
                raise MissingFileError(
                    folder, 'TinyFace needs Probe/, Gallery_Match/ and '
                    'Gallery_Distractor/ below test_dir')
            for dirpath, _, files in sorted(os.walk(folder)):
                for f in sorted(files):
                    if osp.splitext(f)[1].lower() in _EXTS:
                        key = osp.relpath(osp.join(dirpath, f), self.root)
                        keys.append(key.replace(os.sep, '/'))
                        labels.append(tinyface_role_subject(keys[-1])[1])
        self._keys = np.asarray(keys, dtype=object)
        self._labels = np.asarray(labels, np.int64)
        return len(keys)

    def raw_labels(self) -> np.ndarray:
        if not self._fully_initialized:
            self.full_init()
        return self._labels

    def get_info(self, i: int) -> dict:
        key = self._keys[i]
        return dict(img_path=osp.join(self.root, key), key=key)

    def load_sample(self, info: dict) -> bool:
        with open(info['img_path'], 'rb') as f:
            buf = f.read()
        img = self.decode(buf, info['img_path'], info['key'])
        if img is None:
            return False
        if self.img_size is not None and img.shape[:2] != self.img_size:
            img = cv2.resize(img, self.img_size[::-1],
                             interpolation=cv2.INTER_CUBIC)
        info['img'] = img
        return True
