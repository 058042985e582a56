from .graph_sampler import GraphSampler, nearest_classes
from .pk_sampler import PKSampler

__all__ = ['GraphSampler', 'PKSampler', 'nearest_classes']
