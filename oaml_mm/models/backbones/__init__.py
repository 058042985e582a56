"""Backbones: IR / IR-SE networks."""
from .iresnet import IRESNET_ARCHS, IResNet, l2_with_norm

__all__ = ['IResNet', 'IRESNET_ARCHS', 'l2_with_norm']
