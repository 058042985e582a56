"""Model utilities: checkpoint key mappings, BatchNorm folding for inference."""
from .checkpoint_convert import (adaface_to_oaml, infer_iresnet_config,
                                 insightface_to_oaml, load_foreign_checkpoint,
                                 oaml_to_insightface)
from .embedding_settings import (LATER_SETTINGS, calibration_settings_problem,
                                 embedding_settings, settings_differences)
from .fold_batchnorm import fold_batchnorm, inference_model

__all__ = [
    'load_foreign_checkpoint', 'adaface_to_oaml', 'insightface_to_oaml',
    'oaml_to_insightface', 'infer_iresnet_config', 'fold_batchnorm',
    'inference_model', 'embedding_settings', 'settings_differences',
    'calibration_settings_problem',
    'LATER_SETTINGS'
]
