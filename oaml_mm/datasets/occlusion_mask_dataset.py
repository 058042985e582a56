"""Occluded faces with ground-truth visibility masks (OAML's occlusion stream).

OAML (docs/models.md) trains its OcclusionHead on niqab-style occluded faces whose
visible pixels are marked by hand; no standard file format exists, so oaml_mm defines
one::

    <data_root>/
      images/<name>.png|.jpg|.jpeg|.bmp   the aligned face (any size, RGB or grey)
      masks/<name>.png                    single channel, same height and width as the
                                          image; 255 = visible, 0 = occluded (values in
                                          between are partial visibility); a mask
                                          whose only values are 0 and 1 is read as
                                          the 0/1 encoding (1 = visible)
      labels.txt                          optional: "<name> <identity>" per line; also
                                          fixes the order and the subset of samples

``<name>`` may contain sub-folders (``id_0007/003``) but must stay inside the data
root. Without ``labels.txt`` the images folder is scanned once (sorted, hidden and
system entries such as ``.ipynb_checkpoints`` or ``._*`` skipped) and samples carry
no identity label.
"""
import io
import os
import os.path as osp

import cv2
import numpy as np

from oaml_mm.errors import DataFormatError, MissingFileError
from oaml_mm.registry import DATASETS
from .base_face_dataset import (BaseFaceDataset, check_relative_path,
                                decode_image, read_text, walk_visible)

__all__ = [
    'OcclusionMaskDataset', 'write_occlusion_mask_sample', 'mask_to_visibility'
]

_IMG_EXT = ('.png', '.jpg', '.jpeg', '.bmp')


def mask_to_visibility(mask: np.ndarray, path: str = '<array>',
                       record=None) -> np.ndarray:
    """A stored visibility mask as float32 in [0, 1] (1 = visible).

    Accepted encodings: uint8 0..255 (255 = visible, values between are partial
    visibility), uint16 0..65535 (65535 = visible, a 16-bit PNG), binary 0/1 of
    any integer dtype (many public occlusion generators write it, some as 16-bit
    PNGs; detected because its maximum is 1, which in the 0..255 or 0..65535
    encoding would mean a face with no cell more than 0.4 % visible), bool, and
    float in [0, 1]. Other integer dtypes (int32, int64, ...) are read as 0..255.

    Args:
        mask (np.ndarray): [H, W] mask as decoded or given.
        path (str): File for the error message.
        record: Record for the error message.

    Returns:
        np.ndarray: float32 [H, W] in [0, 1].

    Raises:
        DataFormatError: Values outside every accepted encoding (negative, NaN,
            floats above 1, integers above 255).
    """
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask.astype(np.float32)
    if mask.dtype.kind == 'f':
        if mask.size and (not np.isfinite(mask).all() or mask.min() < 0
                          or mask.max() > 1):
            raise DataFormatError(
                path, 'float visibility mask must lie in [0, 1] (1 = visible)',
                record=record, field='mask')
        return mask.astype(np.float32)
    # A 16-bit PNG's full scale is 65535; every other integer dtype (uint8 as
    # decoded, int arrays a caller built) uses the 0..255 convention.
    full = 65535 if mask.dtype == np.uint16 else 255
    if mask.dtype.kind not in 'ui' or (mask.size and (
            mask.min() < 0 or mask.max() > full)):
        raise DataFormatError(
            path, f'mask of dtype {mask.dtype} with values outside 0..{full}; '
            f'expected 0..{full} ({full} = visible) or 0/1 (1 = visible)',
            record=record, field='mask')
    if mask.size and mask.max() == 1:
        return mask.astype(np.float32)
    return (mask.astype(np.float64) / full).astype(np.float32)


def write_occlusion_mask_sample(root: str, name: str, image_rgb: np.ndarray,
                                visibility_mask: np.ndarray,
                                ext: str = '.png') -> str:
    """Write one image and its visibility mask in the layout above.

    Args:
        root (str): Data set folder.
        name (str): Sample name without extension (may contain ``/``).
        image_rgb (np.ndarray): uint8 [H,W,3] RGB (or [H,W] grey).
        visibility_mask (np.ndarray): [H,W] in any encoding
            :func:`mask_to_visibility` accepts (float or bool in [0, 1], uint8
            0..255, binary 0/1); always written as 0..255 (255 = visible).
        ext (str): Image extension, ``.png`` (lossless, default) or ``.jpg``.

    Returns:
        str: The image path written.

    Raises:
        ValueError: The mask does not have the image's height and width.
        DataFormatError: The mask values fit no accepted encoding.
    """
    image_rgb = np.asarray(image_rgb)
    mask = np.asarray(visibility_mask)
    if mask.shape[:2] != image_rgb.shape[:2] or mask.ndim != 2:
        raise ValueError(f'mask shape {mask.shape} does not match image '
                         f'{image_rgb.shape[:2]}; expected a [H,W] mask')
    # A 0/1 mask written as it is would read back as 1/255 visibility.
    mask = np.clip(np.rint(mask_to_visibility(mask, name) * 255), 0,
                   255).astype(np.uint8)
    img_path = osp.join(root, 'images', name + ext)
    mask_path = osp.join(root, 'masks', name + '.png')
    os.makedirs(osp.dirname(img_path), exist_ok=True)
    os.makedirs(osp.dirname(mask_path), exist_ok=True)
    img = image_rgb if image_rgb.ndim == 2 else cv2.cvtColor(
        image_rgb, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(img_path, img):
        raise OSError(f'{img_path}: cannot write image')
    if not cv2.imwrite(mask_path, mask):
        raise OSError(f'{mask_path}: cannot write mask')
    return img_path


@DATASETS.register_module()
class OcclusionMaskDataset(BaseFaceDataset):
    """Occluded faces and their visibility masks, in the layout of this module.

    Each sample has ``img`` (RGB) and ``visibility_mask`` (float32 [H,W], 1 = visible);
    :class:`PackFaceInputs` turns the mask into the [1,7,7] ``gt_visibility`` target.

    Examples:
        >>> occluded = dict(type='OcclusionMaskDataset', data_root='data/niqab',
        ...                 pipeline=[dict(type='FaceRandomFlip'),
        ...                           dict(type='PackFaceInputs')])

    Args:
        data_root (str): Folder with ``images/`` and ``masks/``.
        ann_file (str): Optional ``<name> <label>`` list; defaults to ``labels.txt``
            when that file exists.
        **kwargs: See :class:`~oaml_mm.datasets.base_face_dataset.BaseFaceDataset`.
    """

    def __init__(self, data_root: str, ann_file: str = 'labels.txt',
                 **kwargs) -> None:
        kwargs.setdefault('dataset_name', osp.basename(osp.normpath(data_root)))
        if ann_file and not osp.isfile(osp.join(data_root, ann_file)) and \
                ann_file == 'labels.txt':
            ann_file = ''
        super().__init__(data_root=data_root, ann_file=ann_file, **kwargs)

    def load_index(self) -> int:
        img_dir = osp.join(self.data_root, 'images')
        if not osp.isdir(img_dir):
            raise MissingFileError(img_dir, 'images/ folder of an occlusion '
                                   'mask data set (see docs/datasets.md)')
        exts = {}
        for root, files in walk_visible(img_dir):
            for f in files:
                stem, ext = osp.splitext(f)
                if ext.lower() in _IMG_EXT:
                    rel = osp.relpath(osp.join(root, stem), img_dir)
                    exts[rel.replace(os.sep, '/')] = ext
        names, labels = [], []
        if self.ann_file:
            text = read_text(self.ann_file, '"<name> <label>" lines')
            with io.StringIO(text, newline=None) as f:
                for lineno, line in enumerate(f, 1):
                    parts = line.split()
                    if not parts:
                        continue
                    try:
                        if len(parts) != 2:
                            raise ValueError
                        label = int(parts[1])
                    except ValueError:
                        raise DataFormatError(
                            self.ann_file, 'expected "<name> <integer label>", '
                            f'got {line.strip()[:80]!r}',
                            record=f'line {lineno}') from None
                    check_relative_path(parts[0], self.ann_file,
                                        f'line {lineno}', 'name')
                    if parts[0] not in exts:
                        raise MissingFileError(
                            osp.join(img_dir, parts[0] + '.png'),
                            f'image of line {lineno} of {self.ann_file}')
                    names.append(parts[0])
                    labels.append(self.check_label(
                        label, self.ann_file, f'line {lineno}'))
        else:
            names = sorted(exts)
        self._names = names
        self._exts = [exts[n] for n in names]
        self._labels = np.asarray(labels, np.int64) if self.ann_file else None
        return len(names)

    def get_info(self, i: int) -> dict:
        name = self._names[i]
        info = dict(
            img_path=osp.join(self.data_root, 'images', name + self._exts[i]),
            mask_path=osp.join(self.data_root, 'masks', name + '.png'),
            key=name, occlusion_type='annotated')
        if self._labels is not None:
            info['gt_label'] = int(self._labels[i])
        return info

    def load_sample(self, info: dict) -> bool:
        img = self.decode(np.fromfile(info['img_path'], np.uint8),
                          info['img_path'], info['key'])
        if img is None:
            return False
        mask_path = info['mask_path']
        if not osp.isfile(mask_path):
            raise MissingFileError(mask_path,
                                   f'visibility mask of {info["img_path"]}')
        try:
            # ANYDEPTH keeps a 16-bit mask 16-bit: plain GRAYSCALE shifts it
            # to 8 bits, turning a 0/1 mask into all zeros (fully occluded).
            mask = decode_image(np.fromfile(mask_path, np.uint8), mask_path,
                                info['key'],
                                cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
        except DataFormatError as e:
            raise DataFormatError(
                mask_path, f'cannot decode the mask ({e.what}); expected a '
                'single-channel PNG', record=info['key']) from None
        if mask.shape != img.shape[:2]:
            raise DataFormatError(
                mask_path, f'mask is {mask.shape[1]}x{mask.shape[0]} but its '
                f'image is {img.shape[1]}x{img.shape[0]}; expected the same size',
                record=info['key'], field='size')
        info['img'] = img
        info['visibility_mask'] = mask_to_visibility(mask, mask_path,
                                                     info['key'])
        return True

    def raw_labels(self) -> np.ndarray:
        if not self._fully_initialized:
            self.full_init()
        if self._labels is None:
            return super().raw_labels()
        return self._labels
