"""Necks: the visibility predictors (occlusion head on maps, segmenter on images)."""
from .occlusion_head import OcclusionHead
from .occlusion_segmenter import OcclusionSegmenter

__all__ = ['OcclusionHead', 'OcclusionSegmenter']
