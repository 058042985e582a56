"""Detectors: faces, their boxes and five landmarks in unaligned photos."""
from .face_detector import FaceDetections, FaceDetector

__all__ = ['FaceDetector', 'FaceDetections']
