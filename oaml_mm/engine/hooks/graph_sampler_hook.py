"""Give the GraphSampler the model: feature extraction and QAConv scoring per epoch.

QAConv-GS (Liao & Shao, CVPR 2022) rebuilds its class graph from the current model at
every epoch start. The sampler (:class:`~oaml_mm.datasets.samplers.GraphSampler`)
calls the builder this hook installs; the builder runs the recognizer in eval mode on
one image per class, scores all class pairs with the recognizer's own QAConv matcher
(:meth:`OAMLRecognizer.match`, the one scorer of training, evaluation and the API)
and keeps each class's nearest classes. The hook also carries the current epoch's
graph through checkpoints so a resumed run draws the same batches.
"""
import random
from typing import Optional

import numpy as np
import torch
from mmengine.dataset import pseudo_collate
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from torch.utils.data import DataLoader, Dataset

from oaml_mm.datasets.samplers.graph_sampler import nearest_classes
from oaml_mm.errors import ConfigError
from oaml_mm.registry import DATASETS, HOOKS
from .safe_checkpoint_hook import get_rng_state, set_rng_state

__all__ = ['GraphSamplerHook']

CHECKPOINT_KEY = 'graph_sampler'


class _SeededSubset(Dataset):
    """``dataset[indices[i]]`` with python/numpy/torch seeded from ``(seed, epoch, i)``.

    The training pipeline's random augmentations then give the same representative
    image on every rank and in a resumed run.
    """

    def __init__(self, dataset, indices: np.ndarray, key: tuple) -> None:
        self.dataset = dataset
        self.indices = indices
        self.key = [int(k) % 2**63 for k in key]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        s = int(np.random.SeedSequence(self.key + [i]).generate_state(1)[0])
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)
        return self.dataset[int(self.indices[i])]


def _find_sampler(loader):
    sampler = getattr(loader, 'sampler', None)
    if not hasattr(sampler, 'set_graph_builder'):
        sampler = getattr(getattr(loader, 'batch_sampler', None), 'sampler', None)
    return sampler if hasattr(sampler, 'set_graph_builder') else None


@HOOKS.register_module()
class GraphSamplerHook(Hook):
    """Install the class-graph builder of a ``GraphSampler`` training loader.

    Example::

        train_dataloader = dict(
            sampler=dict(type='GraphSampler', batch_size=64, num_instances=4))
        custom_hooks = [dict(type='GraphSamplerHook', batch_size=128)]

    Args:
        batch_size (int): Images per forward pass of the extraction. Defaults to 64.
        num_workers (int): DataLoader workers of the extraction. Defaults to 0.
        dataset (dict, optional): Data set config to read the representatives from
            (same length and order as the training set, e.g. without random
            augmentation). Defaults to the training set itself, its augmentations
            seeded per representative.
        use_visibility (bool): Weight the matching with the predicted visibility,
            as OAML's evaluation does. Defaults to True.
        block_size (int): Classes scored against all others at once. Defaults to
            256.
    """

    priority = 'NORMAL'

    def __init__(self,
                 batch_size: int = 64,
                 num_workers: int = 0,
                 dataset: Optional[dict] = None,
                 use_visibility: bool = True,
                 block_size: int = 256) -> None:
        if batch_size < 1 or num_workers < 0 or block_size < 1:
            raise ConfigError('GraphSamplerHook: batch_size and block_size must '
                              'be >= 1 and num_workers >= 0')
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.dataset_cfg = dataset
        self.use_visibility = use_visibility
        self.block_size = block_size
        self._pending_state: Optional[dict] = None
        self.sampler = None

    def before_train(self, runner) -> None:
        loader = runner.train_dataloader
        sampler = _find_sampler(loader)
        if sampler is None:
            raise ConfigError('GraphSamplerHook needs a GraphSampler in '
                              'train_dataloader.sampler')
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        if getattr(model, 'qaconv_head', None) is None or \
                not hasattr(model, 'extract'):
            raise ConfigError('GraphSamplerHook scores classes with QAConv: the '
                              'model needs extract() and a qaconv_head')
        dataset = sampler.dataset
        if self.dataset_cfg is not None:
            dataset = DATASETS.build(self.dataset_cfg)
            if len(dataset) != len(sampler.dataset):
                raise ConfigError(
                    f'GraphSamplerHook: dataset has {len(dataset)} samples, the '
                    f'training set {len(sampler.dataset)}; they must match')
        collate = getattr(loader, 'collate_fn', None)
        self.sampler = sampler
        sampler.set_graph_builder(
            lambda reps: self.build_graph(model, dataset, reps, sampler, collate))
        if self._pending_state:
            sampler.load_state_dict(self._pending_state)
            self._pending_state = None

    @torch.no_grad()
    def extract(self, model, dataset, indices: np.ndarray, key: tuple,
                collate_fn=None):
        """Feature maps [N, C, h, w] and visibility [N, 1, h, w] of ``indices``."""
        loader = DataLoader(
            _SeededSubset(dataset, indices, key), batch_size=self.batch_size,
            shuffle=False, num_workers=self.num_workers,
            collate_fn=collate_fn or pseudo_collate)
        maps, vis = [], []
        for data in loader:
            data = model.data_preprocessor(data, False)
            out = model.extract(data['inputs'], flip_test=False,
                                return_feature_maps=True, half_maps=False)
            maps.append(out['feature_map'])
            vis.append(out['visibility'])
        return torch.cat(maps), torch.cat(vis)

    def build_graph(self, model, dataset, reps: np.ndarray, sampler,
                    collate_fn=None) -> np.ndarray:
        """Neighbour table [N, P - 1] of the classes whose images are ``reps``."""
        rng_state = get_rng_state()
        was_training = model.training
        model.eval()
        try:
            maps, vis = self.extract(model, dataset, reps,
                                     key=(sampler.seed, sampler.epoch),
                                     collate_fn=collate_fn)
            if not self.use_visibility:
                vis = None

            def score(rows: slice) -> torch.Tensor:
                return model.match(maps[rows], maps,
                                   None if vis is None else vis[rows], vis)

            with torch.no_grad():
                table = nearest_classes(score, len(reps),
                                        sampler.classes_per_batch - 1,
                                        self.block_size)
        finally:
            model.train(was_training)
            set_rng_state(rng_state)
        print_log(f'GraphSampler: class graph of {len(reps)} classes built for '
                  f'epoch {sampler.epoch}', logger='current')
        return table

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.sampler is not None:
            state = self.sampler.state_dict()
            if state:
                checkpoint[CHECKPOINT_KEY] = state

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get(CHECKPOINT_KEY)
        if not state:
            return
        if self.sampler is not None:
            self.sampler.load_state_dict(state)
        else:
            self._pending_state = state
