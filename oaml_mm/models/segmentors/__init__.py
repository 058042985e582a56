"""Segmentors: models that train a visibility predictor on its own."""
from .visibility_segmentor import VisibilitySegmentor

__all__ = ['VisibilitySegmentor']
