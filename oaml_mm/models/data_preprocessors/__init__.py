"""Data preprocessors."""
from .face_data_preprocessor import FaceDataPreprocessor, stack_gt_visibility

__all__ = ['FaceDataPreprocessor', 'stack_gt_visibility']
