from .align import ARCFACE_REF_POINTS, AlignFace5Points, similarity_transform
from .appearance import AppearanceJitter
from .augmenter import FaceAugmenter
from .flip import FaceRandomFlip
from .formatting import PackFaceInputs, visibility_to_grid
from .occlusion import MedicalMaskOcclusion, draw_medical_mask_template
from .random_occlusion import RandomOcclusion

__all__ = [
    'AlignFace5Points', 'ARCFACE_REF_POINTS', 'similarity_transform',
    'AppearanceJitter',
    'FaceAugmenter', 'FaceRandomFlip', 'PackFaceInputs', 'visibility_to_grid',
    'MedicalMaskOcclusion', 'RandomOcclusion', 'draw_medical_mask_template'
]
