from .atomic_backend import AtomicLocalBackend
from .loops import FaceTestLoop, FaceValLoop, bind_metrics
from .oaml_runner import OAMLRunner, init_cpu_distributed

__all__ = ['OAMLRunner', 'AtomicLocalBackend', 'init_cpu_distributed',
           'FaceValLoop', 'FaceTestLoop', 'bind_metrics']
