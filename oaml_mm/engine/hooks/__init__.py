from .dual_loader_hook import DualLoaderHook
from .graph_sampler_hook import GraphSamplerHook
from .loss_weight_schedule_hook import LossWeightScheduleHook
from .margin_warmup_hook import MarginWarmupHook
from .oaml_checkpoint_hook import OAMLCheckpointHook
from .safe_checkpoint_hook import (SafeCheckpointHook, get_rng_state,
                                   set_rng_state)
from .threshold_calibration_hook import ThresholdCalibrationHook
from .visibility_vis_hook import VisibilityVisualizationHook

__all__ = [
    'DualLoaderHook', 'GraphSamplerHook', 'LossWeightScheduleHook',
    'MarginWarmupHook',
    'SafeCheckpointHook', 'OAMLCheckpointHook', 'get_rng_state',
    'set_rng_state', 'ThresholdCalibrationHook', 'VisibilityVisualizationHook'
]
