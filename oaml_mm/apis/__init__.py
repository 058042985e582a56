"""High-level API: embed, compare and search faces with a trained model; train,
test and calibrate from a config (what the tools call)."""
from .calibrate import calibrate_checkpoint
from .evaluate import evaluate_checkpoint
from .face_finder import FaceFinder, NoFaceError, prepare_photos, read_photo
from .face_gallery import (GALLERY_FORMAT, GALLERY_VERSION, FaceGallery,
                           model_fingerprint)
from .face_recognizer import BRANCHES, FaceRecognizer
from .inputs import check_landmarks, load_image, prepare_faces
from .onnx_backend import OnnxRuntimeExtractor, export_onnx
from .photo_folder import align_folder
from .runner_setup import build_runner, prepare_config
from .training import apply_train_options, train_model

__all__ = [
    'FaceRecognizer', 'FaceGallery', 'BRANCHES', 'GALLERY_FORMAT',
    'GALLERY_VERSION', 'model_fingerprint', 'load_image', 'prepare_faces',
    'check_landmarks', 'FaceFinder', 'NoFaceError', 'prepare_photos',
    'read_photo', 'OnnxRuntimeExtractor', 'export_onnx', 'align_folder',
    'prepare_config', 'build_runner', 'apply_train_options', 'train_model',
    'evaluate_checkpoint', 'calibrate_checkpoint'
]
