"""Inference API: embed, compare and search faces with a trained model."""
from .face_finder import FaceFinder, NoFaceError, prepare_photos, read_photo
from .face_gallery import (GALLERY_FORMAT, GALLERY_VERSION, FaceGallery,
                           model_fingerprint)
from .face_recognizer import BRANCHES, FaceRecognizer
from .inputs import check_landmarks, load_image, prepare_faces
from .onnx_backend import OnnxRuntimeExtractor, export_onnx
from .photo_folder import align_folder

__all__ = [
    'FaceRecognizer', 'FaceGallery', 'BRANCHES', 'GALLERY_FORMAT',
    'GALLERY_VERSION', 'model_fingerprint', 'load_image', 'prepare_faces',
    'check_landmarks', 'FaceFinder', 'NoFaceError', 'prepare_photos',
    'read_photo', 'OnnxRuntimeExtractor', 'export_onnx', 'align_folder'
]
