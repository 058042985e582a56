"""Losses of the QAConv branch and the occlusion head."""
from .batch_hard_triplet_loss import BatchHardTripletLoss, batch_hard_triplet
from .class_memory_loss import ClassMemorySoftmaxTripletLoss
from .occlusion_mse_loss import OcclusionMSELoss
from .pairwise_matching_loss import PairwiseMatchingLoss, ranking_accuracy
from .pixel_visibility_loss import PixelVisibilityLoss

__all__ = [
    'PairwiseMatchingLoss', 'BatchHardTripletLoss',
    'ClassMemorySoftmaxTripletLoss', 'OcclusionMSELoss', 'PixelVisibilityLoss',
    'batch_hard_triplet',
    'ranking_accuracy'
]
