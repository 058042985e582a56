from .atomic_backend import AtomicLocalBackend
from .loops import (FaceTestLoop, FaceValLoop, OAMLIterBasedTrainLoop,
                    bind_metrics)
from .oaml_runner import OAMLRunner, init_cpu_distributed

__all__ = ['OAMLRunner', 'AtomicLocalBackend', 'init_cpu_distributed',
           'FaceValLoop', 'FaceTestLoop', 'OAMLIterBasedTrainLoop',
           'bind_metrics']
