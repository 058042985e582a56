"""Necks: the occlusion (visibility) heads."""
from .multiscale_occlusion_head import MultiScaleOcclusionHead
from .occlusion_head import OcclusionHead

__all__ = ['OcclusionHead', 'MultiScaleOcclusionHead']
