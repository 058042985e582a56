from .dual_loader_hook import DualLoaderHook, StreamSampler
from .oaml_checkpoint_hook import OAMLCheckpointHook
from .safe_checkpoint_hook import (SafeCheckpointHook, get_rng_state,
                                   set_rng_state)

__all__ = ['DualLoaderHook', 'StreamSampler', 'SafeCheckpointHook', 'OAMLCheckpointHook', 'get_rng_state', 'set_rng_state']
