"""Recognizers."""
from .oaml import OAMLRecognizer

__all__ = ['OAMLRecognizer']
