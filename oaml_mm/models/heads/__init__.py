"""Heads: margin softmax heads and the QAConv matcher."""
from .margin_heads import AdaFaceHead, ArcFaceHead, BaseMarginHead, CosFaceHead
from .qaconv_head import QAConvHead

__all__ = [
    'BaseMarginHead', 'AdaFaceHead', 'ArcFaceHead', 'CosFaceHead', 'QAConvHead'
]
