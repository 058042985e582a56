"""Small images in the real formats for the data set tests."""
import cv2
import numpy as np


def make_face(label: int, index: int = 0, size: int = 32) -> np.ndarray:
    """A deterministic RGB image whose mean colour encodes the label."""
    img = np.zeros((size, size, 3), np.uint8)
    img[..., 0] = (label * 40) % 256
    img[..., 1] = (index * 30) % 256
    img[..., 2] = 128
    cv2.circle(img, (size // 2, size // 2), size // 4, (255, 255, 255), -1)
    return img


def encode(img: np.ndarray, ext: str = '.jpg') -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()
