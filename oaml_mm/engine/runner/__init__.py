from .atomic_backend import AtomicLocalBackend
from .oaml_runner import OAMLRunner, init_cpu_distributed

__all__ = ['OAMLRunner', 'AtomicLocalBackend', 'init_cpu_distributed']
