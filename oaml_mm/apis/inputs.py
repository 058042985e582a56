"""Turning what a user hands the inference API into aligned RGB crops.

The API accepts file paths, numpy arrays and tensors, either already aligned to the
ArcFace 112x112 template or unaligned with 5 landmarks. Alignment is the data layer's
:class:`~oaml_mm.datasets.transforms.AlignFace5Points` (Umeyama similarity transform to
the ArcFace template, docs/datasets.md), so a face aligned here is pixel-identical to
one the IJB pipeline aligns. Arrays carry no channel order, so the caller must state it:
mixing up BGR and RGB silently costs accuracy with AdaFace weights.
"""
import os
import os.path as osp
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from oaml_mm.datasets.base_face_dataset import decode_image
from oaml_mm.datasets.transforms import (LANDMARK_ORDER, AlignFace5Points,
                                         landmark_layout_mistake,
                                         landmarks_plausible)
from oaml_mm.errors import DataFormatError, ImageInputError

__all__ = ['ImageLike', 'load_image', 'prepare_faces', 'check_landmarks']

ImageLike = Union[str, os.PathLike, np.ndarray, torch.Tensor]


def load_image(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read an image file as an RGB uint8 array [H, W, 3].

    Args:
        path (str): Image file (any format OpenCV decodes).

    Returns:
        np.ndarray: RGB image.

    Raises:
        ImageInputError: The file is missing or cannot be decoded.
    """
    path = str(path)
    if not osp.isfile(path):
        raise ImageInputError(f'{path}: no such image file')
    try:
        # The data layer's decoder: header size bounded, cv2.error caught.
        return decode_image(np.fromfile(path, dtype=np.uint8), path)
    except DataFormatError as e:
        raise ImageInputError(
            f'{path}: not a readable image ({e.what}; empty, truncated, too large '
            'or not an image format OpenCV decodes)') from None


def _check_pixel_range(img: np.ndarray, where: str) -> None:
    """Refuse non-uint8 pixels that are not 0..255 intensities.

    Clipping such values silently gave wrong embeddings: a float image in
    [0, 1] rounds to an almost black face, a normalised one in [-1, 1] loses
    its negative half. An image
    whose every value lies in [0, 1] is taken for 0..1 scaling and refused,
    since a 0..255 face that dark is not a usable face either.

    Raises:
        ImageInputError: Non-numeric or non-finite values, values outside
            [0, 255], or every value in [0, 1].
    """
    if img.dtype == np.bool_ or not np.issubdtype(img.dtype, np.number) or \
            np.iscomplexobj(img):
        # A mask or an object array is no image: "not finite" would mislead.
        raise ImageInputError(
            f'{where}: dtype {img.dtype} is not an image; expected uint8 or '
            'real numbers holding 0..255 intensities')
    if not np.isfinite(img).all():
        raise ImageInputError(f'{where}: pixel values must be finite numbers')
    if img.size == 0:
        raise ImageInputError(f'{where}: expected pixel intensities 0..255, '
                              f'got {img.dtype} of shape {tuple(img.shape)}')
    lo, hi = float(img.min()), float(img.max())
    if lo < 0 or hi > 255:
        raise ImageInputError(
            f'{where}: pixel values span [{lo:.4g}, {hi:.4g}]; expected 0..255 '
            '(pass the image before mean/std normalisation, as uint8 or as '
            'numbers in 0..255)')
    if hi <= 1.0:
        raise ImageInputError(
            f'{where}: every pixel value lies in [0, 1] ({img.dtype}); expected '
            '0..255: multiply by 255 (or pass uint8)')


def _array_to_rgb(img: np.ndarray, channel_order: Optional[str],
                  where: str) -> np.ndarray:
    if channel_order not in ('rgb', 'bgr'):
        raise ImageInputError(
            f"{where}: a numpy image needs channel_order='rgb' or 'bgr' (the "
            f'order of its channels), got {channel_order!r}')
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise ImageInputError(
            f'{where}: expected an image [H, W, 3] (or [H, W]), got shape '
            f'{tuple(img.shape)}')
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageInputError(
            f'{where}: empty image ({img.shape[1]}x{img.shape[0]} pixels); '
            'expected a picture with pixels')
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    if img.dtype != np.uint8:
        _check_pixel_range(img, where)
        img = np.rint(img).astype(np.uint8)
    if channel_order == 'bgr':
        img = img[:, :, ::-1]
    return np.ascontiguousarray(img)


def _tensor_to_rgb(img: torch.Tensor, channel_order: Optional[str],
                   where: str) -> np.ndarray:
    if img.dim() != 3 or img.shape[0] != 3:
        raise ImageInputError(
            f'{where}: expected a tensor image [3, H, W] with values in 0..255, '
            f'got shape {tuple(img.shape)}')
    return _array_to_rgb(img.detach().cpu().permute(1, 2, 0).numpy(),
                         channel_order or 'rgb', where)


#: Smallest landmark spread and eye distance (pixels) an alignment can scale from.
_MIN_LANDMARK_SPREAD = 1.0


def check_landmarks(landmarks,
                    shape: Sequence[int],
                    where: str,
                    tolerance: float = 0.4) -> np.ndarray:
    """Validate 5 landmarks against an image shape and a face's layout.

    Every given landmark set (API arguments, ``tools/infer.py --landmarks``,
    ``align_faces.py --landmarks``) passes here. Points that do not look like a
    face but do once read in another common layout (all x then all y, (y, x)
    pairs, left and right swapped; :func:`landmark_layout_mistake`) are refused
    with that layout named; other implausible points are left to the caller
    (:class:`FaceFinder` aligns them with the eyes alone, as detected ones).

    Args:
        landmarks: Five ``(x, y)`` points (anything numpy reads as [5, 2]).
        shape (Sequence[int]): ``(H, W, ...)`` of the image.
        where (str): What the image is, for the message.
        tolerance (float): Of :func:`landmarks_plausible`. Defaults to 0.4.

    Returns:
        np.ndarray: float32 [5, 2].

    Raises:
        ImageInputError: Wrong shape, non-finite, a point outside the image,
            or degenerate points (all within a pixel, or the eyes within a
            pixel of each other), or a layout mistake (named).
    """
    try:
        lmk = np.asarray(landmarks, dtype=np.float32).reshape(-1, 2)
    except (TypeError, ValueError):
        raise ImageInputError(f'{where}: landmarks must be 5 (x, y) numbers, got '
                              f'{landmarks!r}') from None
    if lmk.shape != (5, 2) or not np.isfinite(lmk).all():
        raise ImageInputError(
            f'{where}: landmarks must be 5 finite (x, y) points (eyes, nose, '
            f'mouth corners), got shape {lmk.shape}')
    # Coincident points (e.g. five copies of one point) leave the similarity
    # transform without a scale: the "aligned" crop is a smear of one pixel.
    spread = float(np.sqrt(((lmk - lmk.mean(0)) ** 2).sum(1).mean()))
    eyes = float(np.hypot(*(lmk[1] - lmk[0])))
    if spread < _MIN_LANDMARK_SPREAD or eyes < _MIN_LANDMARK_SPREAD:
        raise ImageInputError(
            f'{where}: degenerate landmarks (spread {spread:.2f} px, eyes '
            f'{eyes:.2f} px apart); expected 5 distinct points of a face '
            f'(eyes at least {_MIN_LANDMARK_SPREAD:g} px apart)')
    mistake = landmark_layout_mistake(lmk, tolerance)
    if mistake:
        raise ImageInputError(
            f'{where}: the 5 landmarks '
            f'{" ".join(f"({x:.1f}, {y:.1f})" for x, y in lmk)} do not look '
            f'like a face ({landmarks_plausible(lmk, tolerance)[1]}) but do '
            f'when read as {mistake}; expected {LANDMARK_ORDER}')
    h, w = int(shape[0]), int(shape[1])
    outside = (lmk[:, 0] < 0) | (lmk[:, 0] > w - 1) | (lmk[:, 1] < 0) | \
        (lmk[:, 1] > h - 1)
    if outside.any():
        i = int(np.nonzero(outside)[0][0])
        raise ImageInputError(
            f'{where}: landmark {i} at ({lmk[i, 0]:.1f}, {lmk[i, 1]:.1f}) lies '
            f'outside the {w}x{h} image')
    return lmk


def _is_numeric_ndim(value, ndim: int) -> bool:
    """True when ``value`` is one numeric array of ``ndim`` dimensions (one image's
    points [K, 2] or box [4]), False for a per-image list of them."""
    try:
        return np.asarray(value, dtype=np.float64).ndim == ndim
    except (TypeError, ValueError):
        return False


def _is_point_set(value) -> bool:
    return _is_numeric_ndim(value, 2)


def prepare_faces(images: Union[ImageLike, Sequence[ImageLike]],
                  channel_order: Optional[str] = None,
                  landmarks=None,
                  size: int = 112) -> torch.Tensor:
    """Aligned RGB uint8 crops [B, 3, size, size] from user inputs.

    Args:
        images: One image or a list: a path, a numpy array [H, W, 3] (its
            ``channel_order`` must be given) or a tensor [3, H, W] (RGB unless
            ``channel_order`` says otherwise), values 0..255. A batch tensor
            [B, 3, H, W] is taken as B images.
        channel_order (str, optional): ``'rgb'`` or ``'bgr'`` for arrays/tensors.
            Files are decoded by OpenCV and need none.
        landmarks: None (the images are aligned ``size`` x ``size`` crops), or one
            [5, 2] array per image (a [B, 5, 2] array works), or a list with None
            for the images that are already aligned.
        size (int): Crop side the model expects. Defaults to 112.

    Returns:
        torch.Tensor: uint8 [B, 3, size, size], RGB.

    Raises:
        ImageInputError: Unreadable file, wrong shape, a non-``size`` image without
            landmarks, landmarks outside the image, or a non-uint8 image whose
            values are not 0..255 intensities (outside [0, 255], or all in
            [0, 1]: 0..1 scaling is refused, not guessed).

    Examples:
        >>> crop = np.zeros((112, 112, 3), np.uint8)
        >>> prepare_faces(crop, channel_order='bgr').shape
        torch.Size([1, 3, 112, 112])
    """
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        items: List[ImageLike] = list(images)
    elif isinstance(images, (str, os.PathLike, np.ndarray, torch.Tensor)):
        items = [images]
    else:
        items = list(images)
    if not items:
        raise ImageInputError('no images given')
    if landmarks is None:
        lmks = [None] * len(items)
    else:
        lmks = list(landmarks)
        if len(items) == 1 and _is_point_set(landmarks):
            lmks = [landmarks]
        if len(lmks) != len(items):
            raise ImageInputError(
                f'{len(items)} images but {len(lmks)} landmark sets')
    align = AlignFace5Points((size, size))
    out = []
    for i, (item, lmk) in enumerate(zip(items, lmks)):
        if isinstance(item, (str, os.PathLike)):
            where = str(item)
            img = load_image(item)
        elif isinstance(item, np.ndarray):
            where = f'image {i}'
            img = _array_to_rgb(item, channel_order, where)
        elif isinstance(item, torch.Tensor):
            where = f'image {i}'
            img = _tensor_to_rgb(item, channel_order, where)
        else:
            raise ImageInputError(
                f'image {i}: expected a path, numpy array or tensor, got '
                f'{type(item).__name__}')
        if lmk is not None:
            pts = check_landmarks(lmk, img.shape, where)
            img = align.transform(dict(img=img, landmarks=pts))['img']
        elif img.shape[:2] != (size, size):
            raise ImageInputError(
                f'{where}: a {img.shape[1]}x{img.shape[0]} image is not an '
                f'aligned {size}x{size} face crop; pass its 5 landmarks to '
                'align it')
        out.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))
    return torch.stack(out)
