"""Model utilities: checkpoint key mappings."""
from .checkpoint_convert import (
                                 adaface_to_oaml,
                                 infer_iresnet_config,
                                 insightface_to_oaml,
                                 load_foreign_checkpoint,
                                 oaml_to_insightface,
)

__all__ = [
    'load_foreign_checkpoint', 'adaface_to_oaml', 'insightface_to_oaml',
    'oaml_to_insightface', 'infer_iresnet_config'
]
