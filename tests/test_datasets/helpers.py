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


def huge_header_png(width: int = 65535, height: int = 65535) -> bytes:
    """A ~70-byte PNG whose header claims ``width x height`` RGB pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack('>I', len(data)) + kind + data +
                struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))

    return (b'\x89PNG\r\n\x1a\n' +
            chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(b'\0' * 16)) + chunk(b'IEND', b''))
