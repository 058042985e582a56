"""Face images on disk: one folder per identity, or a list file.

The folder mode follows torchvision's ``ImageFolder`` convention (sorted sub-folders are
the identities). For 100k+ identities that scan costs minutes at every start, so the
list-file mode reads ``<relative path> <label>`` lines instead (write it once with
:meth:`FaceImageFolder.write_list`). Paths are kept as one fixed-width byte array, not
as a list of Python strings, so workers share it without copy-on-write growth.

The folder scan skips hidden and system entries (names starting with ``.`` such as
``.ipynb_checkpoints``, ``.DS_Store`` and AppleDouble ``._*`` files; ``__MACOSX``,
``Thumbs.db``, ``desktop.ini``; see
:func:`~oaml_mm.datasets.base_face_dataset.is_hidden_entry`). List-file paths must
stay inside ``data_root``.
"""
import io
import os
import os.path as osp
from typing import Optional, Sequence

import numpy as np

from oaml_mm.errors import DataFormatError, MissingFileError
from oaml_mm.registry import DATASETS
from .base_face_dataset import (MAX_LABEL, BaseFaceDataset,
                                check_relative_path, is_hidden_entry,
                                read_text, walk_visible)

__all__ = ['FaceImageFolder']

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')


@DATASETS.register_module()
class FaceImageFolder(BaseFaceDataset):
    """Identity folders or a ``path label`` list.

    Examples:
        >>> folder = dict(type='FaceImageFolder', data_root='data/casia/imgs')
        >>> listed = dict(type='FaceImageFolder', data_root='data/casia/imgs',
        ...               ann_file='../train_list.txt')

    Args:
        data_root (str): Root of the images (``<identity>/<image>`` in folder mode).
        ann_file (str): Optional list file (relative to ``data_root`` unless
            absolute): ``<path relative to data_root> <label>`` per line.
        extensions (Sequence[str]): Image extensions of the folder scan.
        **kwargs: See :class:`~oaml_mm.datasets.base_face_dataset.BaseFaceDataset`.
    """

    def __init__(self,
                 data_root: str,
                 ann_file: str = '',
                 extensions: Sequence[str] = IMG_EXTENSIONS,
                 num_classes: Optional[int] = None,
                 **kwargs) -> None:
        self.extensions = tuple(e.lower() for e in extensions)
        self._paths = None
        self._labels = None
        self.classes = None
        kwargs.setdefault('dataset_name', osp.basename(osp.normpath(data_root)))
        super().__init__(data_root=data_root, ann_file=ann_file,
                         num_classes=num_classes, **kwargs)

    def load_index(self) -> int:
        if not osp.isdir(self.data_root):
            raise MissingFileError(self.data_root, 'image root folder')
        if self.ann_file:
            paths, labels = self._read_list(self.ann_file)
        else:
            paths, labels = self._scan()
        if self.num_classes is None:
            self.num_classes = int(max(labels)) + 1 if labels else 0
        elif labels:
            bad = [i for i, lab in enumerate(labels)
                   if not 0 <= lab < self.num_classes]
            if bad:
                i = bad[0]
                raise DataFormatError(
                    self.ann_file or self.data_root,
                    f'label {labels[i]} outside [0, {self.num_classes}) '
                    '(num_classes)', record=f'line {i + 1}', field='label')
        self._paths = np.array([p.encode('utf-8') for p in paths],
                               dtype=np.bytes_) if paths else np.array(
                                   [], dtype='S1')
        self._labels = np.asarray(labels, np.int64)
        return len(paths)

    def _scan(self):
        # Hidden and system folders (.ipynb_checkpoints, __MACOSX...) are not
        # identities: counting one would shift every label after it.
        classes = sorted(d.name for d in os.scandir(self.data_root)
                         if d.is_dir() and not is_hidden_entry(d.name))
        self.classes = classes
        paths, labels = [], []
        for label, cls in enumerate(classes):
            for root, files in sorted(walk_visible(
                    osp.join(self.data_root, cls))):
                for name in files:
                    if name.lower().endswith(self.extensions):
                        paths.append(osp.relpath(osp.join(root, name),
                                                 self.data_root))
                        labels.append(label)
        return paths, labels

    def _read_list(self, path: str):
        if not osp.isfile(path):
            raise MissingFileError(path, 'list file of "<path> <label>" lines')
        paths, labels = [], []
        text = read_text(path, '"<path> <label>" lines')
        with io.StringIO(text, newline=None) as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                name, _, label = line.rpartition(' ')
                try:
                    label = int(label)
                except ValueError:
                    raise DataFormatError(
                        path, f'expected "<path> <integer label>", got '
                        f'{line[:80]!r}', record=f'line {lineno}') from None
                if not name:
                    raise DataFormatError(path, 'missing image path',
                                          record=f'line {lineno}')
                hi = MAX_LABEL if self.num_classes is None else \
                    self.num_classes
                if not 0 <= label < hi:
                    raise DataFormatError(
                        path, f'label {label} outside [0, {hi}) ('
                        f'{"num_classes" if self.num_classes else "int32"})',
                        record=f'line {lineno}', field='label')
                paths.append(check_relative_path(name.strip(), path,
                                                 f'line {lineno}'))
                labels.append(label)
        return paths, labels

    @staticmethod
    def write_list(data_root: str, out_file: str,
                   extensions: Sequence[str] = IMG_EXTENSIONS) -> int:
        """Scan identity folders once and write the list file of the list mode.

        Returns:
            int: Number of images listed.
        """
        ds = FaceImageFolder(data_root, extensions=extensions, lazy_init=True)
        paths, labels = ds._scan()
        with open(out_file, 'w', encoding='utf-8') as f:
            for p, lab in zip(paths, labels):
                f.write(f'{p} {lab}\n')
        return len(paths)

    def get_info(self, i: int) -> dict:
        rel = self._paths[i].decode('utf-8')
        return dict(img_path=osp.join(self.data_root, rel), key=rel,
                    gt_label=int(self._labels[i]))

    def load_sample(self, info: dict) -> bool:
        path = info['img_path']
        if not osp.isfile(path):
            raise MissingFileError(path, f'image listed as {info["key"]!r}')
        img = self.decode(np.fromfile(path, np.uint8), path, info['key'])
        if img is None:
            return False
        info['img'] = img
        return True

    def raw_labels(self) -> np.ndarray:
        if not self._fully_initialized:
            self.full_init()
        return self._labels
