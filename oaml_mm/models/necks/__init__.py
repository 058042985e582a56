"""Necks: the occlusion (visibility) head."""
from .occlusion_head import OcclusionHead

__all__ = ['OcclusionHead']
