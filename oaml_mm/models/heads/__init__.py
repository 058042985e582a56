"""Heads: margin softmax heads (replicated and sharded) and the QAConv matcher."""
from .margin_heads import AdaFaceHead, ArcFaceHead, BaseMarginHead, CosFaceHead
from .partial_fc_head import PartialFCHead, without_sharded_head
from .qaconv_head import QAConvHead

__all__ = [
    'BaseMarginHead', 'AdaFaceHead', 'ArcFaceHead', 'CosFaceHead', 'PartialFCHead',
    'QAConvHead', 'without_sharded_head'
]
