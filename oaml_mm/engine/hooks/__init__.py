from .safe_checkpoint_hook import (SafeCheckpointHook, get_rng_state,
                                   set_rng_state)

__all__ = ['SafeCheckpointHook', 'get_rng_state', 'set_rng_state']
