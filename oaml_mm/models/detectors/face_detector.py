"""Face detector: boxes, scores and five landmarks in an unaligned RGB photo.

The network is MTCNN (Zhang et al., "Joint Face Detection and Alignment Using
Multitask Cascaded Convolutional Networks", IEEE SPL 2016), the detector the
AdaFace/OAML seed aligns its data with, as packaged by ``facenet-pytorch``: its wheel
ships the P-, R- and O-Net weights (``facenet_pytorch/data/{p,r,o}net.pt``, state
dicts that ``torch.load`` reads weights-only, the default on torch >= 2.6), so nothing
is downloaded at run time. Why MTCNN and not YuNet or MediaPipe, with the figures:
``docs/inference.md``, "From photos to embeddings".
"""
from typing import NamedTuple, Sequence, Tuple

import cv2
import numpy as np
import torch

from oaml_mm.errors import ConfigError, EnvironmentCheckError, ImageInputError
from oaml_mm.registry import MODELS

__all__ = ['FaceDetector', 'FaceDetections']


class FaceDetections(NamedTuple):
    """Faces found in one image, largest box first.

    Attributes:
        boxes (np.ndarray): float32 [N, 4] ``x1, y1, x2, y2`` in image pixels.
        scores (np.ndarray): float32 [N] O-Net face probability in [0, 1].
        landmarks (np.ndarray): float32 [N, 5, 2] ``(x, y)`` of the left eye, right
            eye, nose tip, left and right mouth corner (left = image left), the
            order of the ArcFace template
            (:data:`~oaml_mm.datasets.transforms.align.ARCFACE_REF_POINTS`).
    """
    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def _empty() -> FaceDetections:
    return FaceDetections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                          np.zeros((0, 5, 2), np.float32))


@MODELS.register_module()
class FaceDetector:
    """MTCNN face detector returning boxes, scores and five landmarks.

    Examples:
        >>> from oaml_mm.registry import MODELS
        >>> det = MODELS.build(dict(type='FaceDetector', min_face_size=20))
        >>> faces = det.detect(rgb_uint8)   # doctest: +SKIP
        >>> faces.boxes.shape, faces.landmarks.shape   # doctest: +SKIP
        ((1, 4), (1, 5, 2))

    Args:
        min_face_size (int): Smallest face side searched for, in pixels of the
            (possibly downscaled, see ``max_side``) image. Defaults to 20.
        thresholds (Sequence[float]): P-, R- and O-Net score thresholds. Defaults
            to (0.6, 0.7, 0.7), MTCNN's own.
        hard_thresholds (Sequence[float]): The thresholds of :meth:`detect` with
            ``hard=True``, the second try on a photo where nothing was found
            (occluded or drawn faces). Defaults to (0.5, 0.6, 0.6).
        scale_factor (float): Image pyramid step. Defaults to 0.709.
        max_side (int): Longer image side above which the image is downscaled
            before detection (results are mapped back to full resolution); keeps
            a 12-megapixel phone photo at a fraction of a second. Defaults to 1280.
        device (str): Where the three networks run. Defaults to ``'cpu'``.

    Raises:
        EnvironmentCheckError: ``facenet-pytorch`` (which ships the weights) is
            not installed.
        ConfigError: Not three thresholds.
    """

    def __init__(self,
                 min_face_size: int = 20,
                 thresholds: Sequence[float] = (0.6, 0.7, 0.7),
                 hard_thresholds: Sequence[float] = (0.5, 0.6, 0.6),
                 scale_factor: float = 0.709,
                 max_side: int = 1280,
                 device: str = 'cpu') -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError as e:
            raise EnvironmentCheckError(
                'FaceDetector needs the MTCNN weights that the facenet-pytorch '
                'package ships: pip install "facenet-pytorch>=2.5.3,<2.6" '
                f'({e})') from None
        self.min_face_size = int(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.hard_thresholds = tuple(float(t) for t in hard_thresholds)
        self.scale_factor = float(scale_factor)
        self.max_side = int(max_side)
        self.device = torch.device(device)
        if len(self.thresholds) != 3 or len(self.hard_thresholds) != 3:
            raise ConfigError('FaceDetector: thresholds and hard_thresholds must '
                              'be 3 numbers each (P-, R-, O-Net)')
        # select_largest=False: keep O-Net's order; we sort by area ourselves.
        self._mtcnn = MTCNN(min_face_size=self.min_face_size,
                            thresholds=list(self.thresholds),
                            factor=self.scale_factor, keep_all=True,
                            select_largest=False, device=self.device).eval()

    def _run(self, img: np.ndarray, thresholds: Tuple[float, ...]) -> FaceDetections:
        self._mtcnn.thresholds = list(thresholds)
        with torch.no_grad():
            boxes, scores, points = self._mtcnn.detect(img, landmarks=True)
        if boxes is None or len(boxes) == 0:
            return _empty()
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        points = np.asarray(points, np.float32).reshape(-1, 5, 2)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        order = np.argsort(-area, kind='stable')
        return FaceDetections(boxes[order], scores[order], points[order])

    def detect(self, img: np.ndarray, hard: bool = False) -> FaceDetections:
        """Faces in one RGB image.

        Args:
            img (np.ndarray): RGB uint8 [H, W, 3].
            hard (bool): Use ``hard_thresholds`` (finds more occluded faces, and
                more false ones). Defaults to False.

        Returns:
            FaceDetections: Largest box first; empty arrays when there is no face.

        Raises:
            ImageInputError: ``img`` is not an RGB uint8 [H, W, 3] array.
        """
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or \
                img.ndim != 3 or img.shape[2] != 3:
            raise ImageInputError(
                'FaceDetector.detect expects an RGB uint8 [H, W, 3] array, got '
                f'{getattr(img, "dtype", type(img).__name__)} '
                f'{tuple(getattr(img, "shape", ()))}')
        h, w = img.shape[:2]
        if min(h, w) < 12:  # below P-Net's 12x12 window: nothing to search
            return _empty()
        scale = min(1.0, self.max_side / max(h, w))
        small = img if scale == 1.0 else cv2.resize(
            img, (max(1, round(w * scale)), max(1, round(h * scale))),
            interpolation=cv2.INTER_AREA)
        found = self._run(np.ascontiguousarray(small),
                          self.hard_thresholds if hard else self.thresholds)
        if scale != 1.0 and len(found):
            found = FaceDetections(found.boxes / scale, found.scores,
                                   found.landmarks / scale)
        return found

    def __call__(self, img: np.ndarray, hard: bool = False) -> FaceDetections:
        return self.detect(img, hard)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(min_face_size={self.min_face_size}, '
                f'thresholds={self.thresholds}, max_side={self.max_side})')
