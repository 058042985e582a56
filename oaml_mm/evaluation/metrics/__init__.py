"""Registered face metrics built on :mod:`oaml_mm.evaluation.functional`."""
from .face_metric_base import BRANCHES, FaceMetricBase
from .ijb_metric import IJBMetric, read_1n_csv
from .tinyface_metric import TinyFaceMetric
from .verification_metric import VerificationMetric

__all__ = ['FaceMetricBase', 'VerificationMetric', 'IJBMetric', 'read_1n_csv',
           'TinyFaceMetric',
           'BRANCHES']
