"""oaml_mm: Occlusion-Aware Metric Learning for face recognition on OpenMMLab.

OAML pairs a global AdaFace embedding (Kim et al., "AdaFace: Quality Adaptive Margin for
Face Recognition", CVPR 2022) with QAConv local matching (Liao & Shao, "Interpretable
and Generalizable Person Re-Identification with Query-Adaptive Convolution", ECCV 2020)
whose correlations are weighted by a predicted 7x7 visibility map.

``import oaml_mm`` checks the dependency versions and registers every component under
the ``oaml_mm`` scope.
"""
from .utils.setup_env import check_dependencies
from .version import __version__, version_info

check_dependencies()

import warnings  # noqa: E402

from .setup_env import register_all_modules  # noqa: E402
from .utils.config import register_config_package  # noqa: E402

with warnings.catch_warnings():
    # mmcv-lite has no compiled ops; oaml_mm never uses the deformable
    # attention mmpretrain's import chain warns about.
    warnings.filterwarnings('ignore', message='Fail to import ``MultiScale')
    register_all_modules(init_default_scope=False)
# `oaml_mm::` config bases (mmengine looks them up in oaml_mm/.mim/configs).
register_config_package()

__all__ = ['__version__', 'version_info', 'register_all_modules']
