"""From photos to aligned face crops: detect, check the landmarks, align, report.

:func:`prepare_photos` is what :class:`~oaml_mm.apis.FaceRecognizer` and
``tools/infer.py`` call for every input. Per image it takes the first path that
applies and says which one it took:

* ``aligned-input``: the image already is a ``size`` x ``size`` crop (and detection
  is ``'auto'``), used as it is;
* ``given-landmarks``: the caller gave five landmarks, aligned with them;
* ``detected-5pt``: the :class:`~oaml_mm.models.detectors.FaceDetector` found the
  face and its five landmarks look like a face, aligned with all five;
* ``detected-eyes``: found, but the nose or mouth points are implausible (a niqab,
  a mask or a hand hides them and the detector guessed): aligned from the two eye
  centres alone, a two-point similarity onto the template's eye positions;
* ``given-box``: nothing found, but the caller gave a face box: the detector runs
  again inside it at its hard thresholds, else the box's mean landmark layout is
  used.

Alignment itself is always :class:`~oaml_mm.datasets.transforms.AlignFace5Points`
(the eye-only and the box paths hand it the five template points that their
similarity places in the image, which gives exactly that similarity), so crops are
pixel-identical to those of the data pipeline. See ``docs/inference.md``, "From
photos to embeddings".
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from oaml_mm.datasets.transforms import AlignFace5Points
from oaml_mm.datasets.transforms.align import (ARCFACE_REF_POINTS,
                                               landmarks_plausible,
                                               similarity_transform)
from oaml_mm.errors import ConfigError, ImageInputError
from .inputs import (ImageLike, _array_to_rgb, _is_numeric_ndim, _is_point_set,
                     _tensor_to_rgb, check_landmarks, load_image)

__all__ = [
    'FaceFinder', 'NoFaceError', 'prepare_photos', 'read_photo',
    'eye_landmarks', 'box_landmarks', 'landmarks_plausible', 'ALIGN_PATHS',
    'BOX_LANDMARKS', 'MAX_PIXELS'
]

ALIGN_PATHS = ('aligned-input', 'given-landmarks', 'detected-5pt',
               'detected-eyes', 'given-box')

#: Mean position of the five points inside a detector box (fractions of the box
#: width and height, left eye first), measured on MTCNN's detections of SynthFace
#: mini IJB-C crops and of ``skimage.data.astronaut()`` (docs/inference.md).
#: Symmetrised mean of 467 SynthFace detections and the astronaut's.
BOX_LANDMARKS = np.array([[0.27, 0.375], [0.73, 0.375], [0.50, 0.59],
                          [0.29, 0.74], [0.71, 0.74]], np.float32)

#: Largest photo accepted, in pixels (a 100-megapixel image already takes 300 MB
#: decoded; beyond that a file is far more likely a decompression bomb).
MAX_PIXELS = 100_000_000


class NoFaceError(ImageInputError):
    """The detector found no face in an image and no box or landmarks were given."""


def read_photo(path: Union[str, os.PathLike],
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a photo file to RGB uint8 [H, W, 3], refusing huge dimensions.

    Grey and RGBA files are converted (alpha dropped). The size is read from the
    header before decoding, so a decompression bomb costs nothing.

    Args:
        path (str): Image file.
        max_pixels (int): Largest ``W * H`` accepted. Defaults to
            :data:`MAX_PIXELS`.

    Returns:
        np.ndarray: RGB uint8 [H, W, 3].

    Raises:
        ImageInputError: Missing, empty, not an image, or too large; the message
            names the file.
    """
    path = str(path)
    if osp.isfile(path) and osp.getsize(path) == 0:
        raise ImageInputError(f'{path}: the file is empty (0 bytes)')
    if osp.isfile(path):
        from oaml_mm.datasets.base_face_dataset import (MAX_IMAGE_PIXELS,
                                                        image_size)

        # The decoder refuses more than MAX_IMAGE_PIXELS: quote the bound that
        # applies. PNG/JPEG sizes come straight from the header (exact even for
        # a bomb); Pillow probes other formats.
        limit = min(int(max_pixels), MAX_IMAGE_PIXELS)
        with open(path, 'rb') as f:
            head = f.read(1 << 20)
        try:
            wh = image_size(np.frombuffer(head, np.uint8))
        except ValueError as e:  # Pillow's bomb limit: no size known
            raise ImageInputError(
                f'{path}: the image header claims {e}; at most {limit} pixels '
                'are accepted (downscale it first)') from None
        if wh is not None and wh[0] * wh[1] > limit:
            raise ImageInputError(
                f'{path}: a {wh[0]}x{wh[1]} image ({wh[0] * wh[1]} pixels) is '
                f'larger than the {limit} pixels accepted (downscale it first)')
    return load_image(path)


def eye_landmarks(eyes: np.ndarray) -> np.ndarray:
    """Five template points placed by the similarity that maps the eyes alone.

    Args:
        eyes (np.ndarray): [2, 2] left and right eye centre ``(x, y)`` in pixels.

    Returns:
        np.ndarray: float32 [5, 2]; aligning with them is the two-point similarity
        that puts the eyes on the ArcFace template's eye positions.
    """
    to_img = similarity_transform(ARCFACE_REF_POINTS[:2], np.asarray(eyes)[:2])
    return (ARCFACE_REF_POINTS @ to_img[:, :2].T + to_img[:, 2]).astype(np.float32)


def box_landmarks(box: Sequence[float]) -> np.ndarray:
    """The mean five-point layout (:data:`BOX_LANDMARKS`) inside a face box.

    Args:
        box (Sequence[float]): ``x1, y1, x2, y2`` in pixels.

    Returns:
        np.ndarray: float32 [5, 2].
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    return (BOX_LANDMARKS * [x2 - x1, y2 - y1] + [x1, y1]).astype(np.float32)


class FaceFinder:
    """Detect, check and align the faces of photos.

    Args:
        detector (FaceDetector | dict, optional): The detector, or its config for
            the ``MODELS`` registry. Defaults to ``FaceDetector()``, built on first
            use.
        select (str): ``'largest'`` (one face per image, the largest box) or
            ``'all'``. Defaults to ``'largest'``.
        detect (str): ``'auto'`` (a ``size`` x ``size`` image without landmarks is
            taken as an aligned crop, anything else is detected), ``'always'``
            (detect in every image without landmarks, e.g. 112x112 loose crops)
            or ``'never'``. Defaults to ``'auto'``.
        align (str): ``'auto'`` (five points when plausible, else the eyes),
            ``'five'`` or ``'eyes'`` (always the eyes alone: niqab collections).
            Defaults to ``'auto'``.
        size (int): Output crop side. Defaults to 112.
        min_score (float): Faces under this detector score are dropped. Defaults
            to 0.0 (the detector's thresholds decide).
        tolerance (float): Of :func:`landmarks_plausible`. Defaults to 0.4.

    Raises:
        ConfigError: An unknown ``select``, ``detect`` or ``align``.
    """

    def __init__(self,
                 detector=None,
                 select: str = 'largest',
                 detect: str = 'auto',
                 align: str = 'auto',
                 size: int = 112,
                 min_score: float = 0.0,
                 tolerance: float = 0.4) -> None:
        for name, value, allowed in (('select', select, ('largest', 'all')),
                                     ('detect', detect,
                                      ('auto', 'always', 'never')),
                                     ('align', align, ('auto', 'five', 'eyes'))):
            if value not in allowed:
                raise ConfigError(
                    f'FaceFinder: {name} must be one of {allowed}, got {value!r}')
        self._detector = detector
        self.select = select
        self.detect = detect
        self.align = align
        self.size = int(size)
        self.min_score = float(min_score)
        self.tolerance = float(tolerance)
        self._aligner = AlignFace5Points((self.size, self.size))

    @property
    def detector(self):
        """The :class:`FaceDetector`, built on first use."""
        if self._detector is None or isinstance(self._detector, dict):
            from oaml_mm.registry import MODELS
            cfg = self._detector or dict(type='FaceDetector')
            self._detector = MODELS.build(cfg)
        return self._detector

    def _align(self, report: dict, img: np.ndarray, used: np.ndarray) -> dict:
        report['crop'] = self._aligner.transform(
            dict(img=img, landmarks=used))['img']
        report['align_points'] = np.asarray(used, np.float32).tolist()
        return report

    def _from_detection(self, img, box, score, lmk, report: dict) -> dict:
        ok, why = landmarks_plausible(lmk, self.tolerance)
        eyes = self.align == 'eyes' or (self.align == 'auto' and not ok)
        used = eye_landmarks(lmk[:2]) if eyes else lmk
        report.update(path='detected-eyes' if eyes else 'detected-5pt',
                      score=float(score), box=[float(v) for v in box],
                      landmarks=lmk.tolist(),
                      note=why if eyes and not ok else '')
        return self._align(report, img, used)

    def find(self, img: np.ndarray, where: str, landmarks=None,
             box=None) -> List[dict]:
        """Aligned faces of one RGB image.

        Args:
            img (np.ndarray): RGB uint8 [H, W, 3].
            where (str): The image's name for reports and errors.
            landmarks: Five given landmarks (skips detection).
            box: A given face box ``x1, y1, x2, y2``, used when detection fails.

        Returns:
            list[dict]: One per face, largest first: ``crop`` (RGB uint8
            [S, S, 3]), ``image`` (where), ``path`` (one of
            :data:`ALIGN_PATHS`), ``score`` (detector probability, None when not
            detected), ``box``, ``landmarks`` (in image pixels, None when not
            known), ``align_points`` (the five points handed to
            :class:`AlignFace5Points`: warp a mask with them to follow the crop)
            and ``note`` (why the eye-only path was taken).

        Raises:
            NoFaceError: No face, no box and no landmarks.
        """
        base = dict(image=where, score=None, box=None, landmarks=None, note='')
        if landmarks is not None:
            # Refuses a layout mistake (all x then all y, left/right swapped);
            # other implausible points are treated as detected ones are.
            pts = check_landmarks(landmarks, img.shape, where, self.tolerance)
            ok, why = landmarks_plausible(pts, self.tolerance)
            eyes = self.align == 'eyes' or (self.align == 'auto' and not ok)
            used = eye_landmarks(pts[:2]) if eyes else pts
            note = '' if ok else f'given landmarks implausible: {why}' + (
                '; aligned with the eyes alone' if eyes else '')
            return [self._align(dict(base, path='given-landmarks', note=note,
                                     landmarks=pts.tolist()), img, used)]
        if self.detect == 'never' or (
                self.detect == 'auto' and box is None and
                img.shape[:2] == (self.size, self.size)):
            if img.shape[:2] != (self.size, self.size):
                raise ImageInputError(
                    f'{where}: a {img.shape[1]}x{img.shape[0]} image is not an '
                    f'aligned {self.size}x{self.size} face crop; pass its 5 '
                    'landmarks to align it (detection is off)')
            return [dict(base, path='aligned-input', crop=img,
                         align_points=None)]
        faces = self.detector.detect(img)
        keep = faces.scores >= self.min_score
        if box is None and not keep.any():
            faces = self.detector.detect(img, hard=True)
            keep = faces.scores >= self.min_score
        if keep.any():
            idx = np.nonzero(keep)[0]
            if self.select == 'largest':
                idx = idx[:1]
            return [self._from_detection(img, faces.boxes[i], faces.scores[i],
                                         faces.landmarks[i], dict(base))
                    for i in idx]
        if box is None:
            raise NoFaceError(
                f'{where}: no face found (a {img.shape[1]}x{img.shape[0]} image '
                f'is not an aligned {self.size}x{self.size} face crop; the '
                'detector found nothing even at its hard thresholds): give the '
                "face's box or its 5 landmarks")
        return [self._from_box(img, box, where, base)]

    def _from_box(self, img, box, where: str, base: dict) -> dict:
        try:
            x1, y1, x2, y2 = (float(v) for v in np.asarray(box).reshape(4))
        except (TypeError, ValueError):
            raise ImageInputError(f'{where}: a box is 4 numbers x1 y1 x2 y2, got '
                                  f'{box!r}') from None
        h, w = img.shape[:2]
        if not (np.isfinite([x1, y1, x2, y2]).all() and 0 <= x1 < x2 <= w and
                0 <= y1 < y2 <= h):
            raise ImageInputError(
                f'{where}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is not inside the '
                f'{w}x{h} image with x1 < x2, y1 < y2')
        # Second chance inside the box with a margin: the face fills the search
        # window, so the hard thresholds rarely fire on background.
        mx, my = 0.25 * (x2 - x1), 0.25 * (y2 - y1)
        cx1, cy1 = int(max(0, x1 - mx)), int(max(0, y1 - my))
        cx2, cy2 = int(min(w, x2 + mx)), int(min(h, y2 + my))
        faces = self.detector.detect(
            np.ascontiguousarray(img[cy1:cy2, cx1:cx2]), hard=True)
        report = dict(base, path='given-box', box=[x1, y1, x2, y2])
        if len(faces):
            b = faces.boxes + [cx1, cy1, cx1, cy1]
            ix = np.clip(np.minimum(b[:, 2], x2) - np.maximum(b[:, 0], x1), 0, None)
            iy = np.clip(np.minimum(b[:, 3], y2) - np.maximum(b[:, 1], y1), 0, None)
            inter = ix * iy
            union = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) + \
                (x2 - x1) * (y2 - y1) - inter
            i = int(np.argmax(inter / union))
            if inter[i] / union[i] > 0.3:
                lmk = faces.landmarks[i] + [cx1, cy1]
                self._from_detection(img, b[i], faces.scores[i], lmk, report)
                report['path'] = 'given-box'
                report['note'] = ('detected inside the given box' +
                                  (f'; eyes only: {report["note"]}'
                                   if report['note'] else ''))
                return report
        lmk = box_landmarks((x1, y1, x2, y2))
        report.update(landmarks=lmk.tolist(),
                      note='mean landmark layout of the given box')
        return self._align(report, img, lmk)


_DEFAULT_FINDERS: Dict[Tuple, FaceFinder] = {}


def _default_finder(size: int) -> FaceFinder:
    # One detector per process: building it loads three networks.
    if size not in _DEFAULT_FINDERS:
        shared = next(iter(_DEFAULT_FINDERS.values()), None)
        _DEFAULT_FINDERS[size] = FaceFinder(
            shared._detector if shared is not None else None, size=size)
    return _DEFAULT_FINDERS[size]


def _per_image(value, count: int, what: str, is_one) -> list:
    if value is None:
        return [None] * count
    items = [value] if count == 1 and is_one(value) else list(value)
    if len(items) != count:
        raise ImageInputError(f'{count} images but {len(items)} {what}')
    return items


def _is_box(value) -> bool:
    return _is_numeric_ndim(value, 1)


def prepare_photos(images: Union[ImageLike, Sequence[ImageLike]],
                   channel_order: Optional[str] = None,
                   landmarks=None,
                   size: int = 112,
                   finder: Optional[FaceFinder] = None,
                   boxes=None) -> Tuple[torch.Tensor, List[dict]]:
    """Aligned RGB uint8 crops of the faces of photos, and how each was found.

    Args:
        images: One image or a list: a path, a numpy array [H, W, 3] (its
            ``channel_order`` must be given; [H, W] grey and [H, W, 4] RGBA are
            converted) or a tensor [3, H, W]; a batch tensor [B, 3, H, W].
        channel_order (str, optional): ``'rgb'`` or ``'bgr'`` of arrays/tensors.
        landmarks: None, or one [5, 2] per image (None for the ones to detect).
        size (int): Crop side. Defaults to 112.
        finder (FaceFinder, optional): How to detect and align. Defaults to a
            shared ``FaceFinder(size=size)`` (largest face, auto detection).
        boxes: None, or one ``x1, y1, x2, y2`` box per image (None where not
            known), used when detection fails.

    Returns:
        tuple: uint8 [N, 3, size, size] RGB crops (N = images with
        ``select='largest'``), and one report dict per crop (see
        :meth:`FaceFinder.find`, without ``crop``, plus ``index``: the input's
        position).

    Raises:
        ImageInputError: A bad file or array (the message names it).
        NoFaceError: An image without a face, box or landmarks.
    """
    finder = finder or _default_finder(size)
    if finder.size != size:
        raise ImageInputError(f'FaceFinder makes {finder.size}x{finder.size} '
                              f'crops, the model needs {size}x{size}')
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        items = list(images)
    elif isinstance(images, (str, os.PathLike, np.ndarray, torch.Tensor)):
        items = [images]
    else:
        items = list(images)
    if not items:
        raise ImageInputError('no images given')
    lmks = _per_image(landmarks, len(items), 'landmark sets', _is_point_set)
    bxs = _per_image(boxes, len(items), 'boxes', _is_box)
    crops, reports = [], []
    for i, (item, lmk, box) in enumerate(zip(items, lmks, bxs)):
        if isinstance(item, (str, os.PathLike)):
            where = str(item)
            img = read_photo(item)
        elif isinstance(item, np.ndarray):
            where = f'image {i}'
            if item.ndim == 3 and item.shape[2] == 4:
                item = item[:, :, :3]  # RGBA / BGRA: drop alpha
            img = _array_to_rgb(item, channel_order, where)
        elif isinstance(item, torch.Tensor):
            where = f'image {i}'
            img = _tensor_to_rgb(item, channel_order, where)
        else:
            raise ImageInputError(
                f'image {i}: expected a path, numpy array or tensor, got '
                f'{type(item).__name__}')
        for face in finder.find(img, where, lmk, box):
            crops.append(torch.from_numpy(
                np.ascontiguousarray(face.pop('crop'))).permute(2, 0, 1))
            face['index'] = i
            reports.append(face)
    return torch.stack(crops), reports
