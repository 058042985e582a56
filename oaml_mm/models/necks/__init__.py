"""Necks: the visibility predictors (occlusion heads on maps or stages, segmenter
on images)."""
from .multiscale_occlusion_head import MultiScaleOcclusionHead
from .occlusion_head import OcclusionHead
from .occlusion_segmenter import OcclusionSegmenter

__all__ = ['OcclusionHead', 'MultiScaleOcclusionHead', 'OcclusionSegmenter']
