from .align import (ARCFACE_REF_POINTS, LANDMARK_ORDER, AlignFace5Points,
                    landmark_layout_mistake, landmarks_plausible,
                    similarity_transform)
from .appearance import AppearanceJitter
from .augmenter import FaceAugmenter
from .flip import FaceRandomFlip
from .formatting import PackFaceInputs, visibility_to_grid
from .occlusion import MedicalMaskOcclusion, draw_medical_mask_template
from .random_occlusion import RandomOcclusion

__all__ = [
    'AlignFace5Points', 'ARCFACE_REF_POINTS', 'similarity_transform',
    'landmarks_plausible', 'landmark_layout_mistake', 'LANDMARK_ORDER',
    'AppearanceJitter',
    'FaceAugmenter', 'FaceRandomFlip', 'PackFaceInputs', 'visibility_to_grid',
    'MedicalMaskOcclusion', 'RandomOcclusion', 'draw_medical_mask_template'
]
