from .bf16_autocast_optim_wrapper import BF16AutocastOptimWrapper
from .guarded_optim_wrapper import (NONFINITE_CONSECUTIVE, NONFINITE_TOTAL,
                                    GuardedAmpOptimWrapper,
                                    GuardedBF16AutocastOptimWrapper,
                                    GuardedOptimWrapper)

__all__ = [
    'BF16AutocastOptimWrapper', 'GuardedOptimWrapper', 'GuardedAmpOptimWrapper',
    'GuardedBF16AutocastOptimWrapper', 'NONFINITE_CONSECUTIVE', 'NONFINITE_TOTAL'
]
