from .graph_sampler import GraphSampler, nearest_classes
from .pk_sampler import PKSampler
from .stream_sampler import PositionSeededDataset, StreamSampler, mix_seeds

__all__ = ['GraphSampler', 'PKSampler', 'nearest_classes', 'StreamSampler',
           'PositionSeededDataset', 'mix_seeds']
