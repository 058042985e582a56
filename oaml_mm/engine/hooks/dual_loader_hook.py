"""The occlusion stream of OAML: a second batch of occluded and clean faces per step.

OAML (docs/models.md) trains the OcclusionHead on a second stream, each step 80%
niqab-style occluded faces with ground-truth visibility masks and 20% clean faces with
all-ones masks (docs/datasets.md). This hook builds that stream next to the main
DataLoader and adds it to the main batch (``docs/architecture.md``, "Training step").

Determinism: the stream position is derived from ``(runner.epoch, batch_idx)`` only, and
every sample's augmentation is seeded from its position, so a resumed run draws exactly
the samples and augmentations an uninterrupted run draws, whatever the number of
workers. Each rank reads its own shard of a permutation that is redrawn for every
training epoch and every pass over the data (the stream never runs dry).
"""
import copy
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from mmengine.dataset import pseudo_collate
from mmengine.dist import get_dist_info, sync_random_seed
from mmengine.hooks import Hook
from mmengine.logging import print_log
from torch.utils.data import DataLoader

from oaml_mm.datasets.samplers import (PositionSeededDataset, StreamSampler,
                                       mix_seeds)
from oaml_mm.datasets.transforms.formatting import DEFAULT_GRID
from oaml_mm.errors import ConfigError
from oaml_mm.registry import DATASETS, HOOKS

__all__ = ['DualLoaderHook']

OCCLUSION_TRANSFORMS = ('MedicalMaskOcclusion', 'RandomOcclusion')
# The ``occlusion_type`` each one appends (oaml_mm/datasets/transforms).
OCCLUSION_KINDS = {'MedicalMaskOcclusion': 'medical_mask',
                   'RandomOcclusion': 'random'}


@HOOKS.register_module()
class DualLoaderHook(Hook):
    """Add the occlusion stream to every training batch.

    Sets ``data_batch['occlusion'] = {'inputs': [...], 'data_samples': [...]}`` in
    ``before_train_iter``: ``round(batch_size * occluded_ratio)`` occluded samples
    (their ``gt_visibility`` from the mask) followed by the clean ones, whose
    ``gt_visibility`` is set to all ones. The clean part's pipeline must hold no
    occlusion transform but those named in ``clean_occluders``; when
    ``clean_dataloader`` is omitted the main training set is used with its other
    occlusion transforms removed.

    ``clean_occluders=('RandomOcclusion', )`` lets the clean part carry random
    occluders with exact masks (docs/synthface.md, "Random occluders"): a clean
    sample such a transform occluded (its ``occlusion_type`` metainfo names the
    transform's kind, e.g. ``'random'``) keeps its true ``gt_visibility`` (a mask
    its record already carried included); the others still get all ones.

    Examples:
        >>> custom_hooks = [dict(
        ...     type='DualLoaderHook', batch_size=32, occluded_ratio=0.8,
        ...     occluded_dataloader=dict(num_workers=2, dataset=dict(
        ...         type='OcclusionMaskDataset', data_root='data/niqab',
        ...         pipeline=[dict(type='FaceRandomFlip'),
        ...                   dict(type='PackFaceInputs')])),
        ...     clean_dataloader=dict(num_workers=1, dataset=dict(
        ...         type='MXFaceDataset', data_root='data/faces_emore',
        ...         pipeline=[dict(type='PackFaceInputs')])))]

    Args:
        occluded_dataloader (dict): ``dataset`` config plus optional
            ``num_workers``.
        clean_dataloader (dict, optional): Same for the clean part.
        occluded_ratio (float): Fraction of occluded samples. Defaults to 0.8.
        batch_size (int, optional): Stream batch size per rank; defaults to the
            main DataLoader's.
        seed (int, optional): Stream seed; defaults to the run's seed.
        log_skipped (bool): Log the undecodable images skipped by every data set
            at the end of each epoch. Defaults to True.
        clean_occluders (Sequence[str]): Occlusion transforms (of
            ``('MedicalMaskOcclusion', 'RandomOcclusion')``) allowed in the clean
            part's pipeline, their masks kept. Defaults to () (the seed's recipe).

    Raises:
        ConfigError: ``occluded_ratio`` out of [0, 1] or an unknown name in
            ``clean_occluders``.
    """

    priority = 'NORMAL'

    def __init__(self,
                 occluded_dataloader: dict,
                 clean_dataloader: Optional[dict] = None,
                 occluded_ratio: float = 0.8,
                 batch_size: Optional[int] = None,
                 seed: Optional[int] = None,
                 log_skipped: bool = True,
                 clean_occluders: Sequence[str] = ()) -> None:
        if not 0.0 <= occluded_ratio <= 1.0:
            raise ConfigError(
                f'occluded_ratio must be in [0, 1], got {occluded_ratio}')
        if isinstance(clean_occluders, str) or any(
                t not in OCCLUSION_TRANSFORMS for t in clean_occluders):
            raise ConfigError(
                'DualLoaderHook: clean_occluders must be a list of names of '
                f'{OCCLUSION_TRANSFORMS}, got {clean_occluders!r}')
        from oaml_mm.engine.runner.train_cfg_check import \
            check_dataloader_configs
        check_dataloader_configs(occluded_dataloader=occluded_dataloader,
                                 clean_dataloader=clean_dataloader)
        self.clean_occluders = tuple(clean_occluders)
        self._kept_kinds = {OCCLUSION_KINDS[t] for t in self.clean_occluders}
        self.occluded_cfg = copy.deepcopy(occluded_dataloader)
        self.clean_cfg = copy.deepcopy(clean_dataloader)
        self.occluded_ratio = occluded_ratio
        self.batch_size = batch_size
        self.seed = seed
        self.log_skipped = log_skipped
        self.streams: List[dict] = []
        self._iters: Optional[List[Iterator]] = None
        self._expected: Optional[Tuple[int, int]] = None
        #: Side of the all-ones mask of a clean sample: the model's map side
        #: (``backbone.map_size``) once ``before_train`` saw it; None before
        #: (the sample's own mask's grid, :data:`DEFAULT_GRID` without one).
        self.grid: Optional[int] = None

    # building ----------------------------------------------------------------------
    def _stripped(self, name: str) -> bool:
        return name in OCCLUSION_TRANSFORMS and name not in self.clean_occluders

    def _strip_occlusion(self, dataset_cfg: dict) -> dict:
        cfg = copy.deepcopy(dataset_cfg)
        pipeline = cfg.get('pipeline', [])
        kept = [t for t in pipeline
                if not (isinstance(t, dict) and self._stripped(t.get('type')))]
        if len(kept) != len(pipeline):
            print_log('DualLoaderHook: occlusion transforms removed from the '
                      'clean stream pipeline', logger='current')
        cfg['pipeline'] = kept
        return cfg

    def _build_dataset(self, loader_cfg: dict, clean: bool):
        ds = loader_cfg['dataset']
        if isinstance(ds, dict):
            ds_cfg = self._strip_occlusion(ds) if clean else ds
            ds = DATASETS.build(ds_cfg)
        elif clean and any(self._stripped(type(t).__name__)
                           for t in getattr(ds.pipeline, 'transforms', [])):
            raise ConfigError('the clean stream pipeline holds an occlusion '
                              'transform')
        if hasattr(ds, 'full_init'):
            ds.full_init()
        return ds

    def build_streams(self, default_batch_size: int,
                      main_dataset_cfg: Optional[dict] = None,
                      seed: Optional[int] = None) -> None:
        """Build the two data sets (also callable without a runner, e.g. by tools).

        Args:
            default_batch_size (int): Used when ``batch_size`` was not given.
            main_dataset_cfg (dict, optional): The training set config, used for the
                clean part when ``clean_dataloader`` is None.
            seed (int, optional): Used when the hook has no ``seed``.
        """
        batch_size = int(self.batch_size or default_batch_size)
        n_occ = int(round(batch_size * self.occluded_ratio))
        n_clean = batch_size - n_occ
        if self.seed is None:
            self.seed = int(seed) if seed is not None else sync_random_seed()
        self.rank, self.world_size = get_dist_info()
        self.streams = []
        if n_occ:
            self.streams.append(dict(
                dataset=self._build_dataset(self.occluded_cfg, clean=False),
                n=n_occ, clean=False,
                num_workers=int(self.occluded_cfg.get('num_workers', 0))))
        if n_clean:
            clean_cfg = self.clean_cfg
            if clean_cfg is None:
                if main_dataset_cfg is None:
                    raise ConfigError(
                        'DualLoaderHook needs clean_dataloader (or a runner '
                        'whose train_dataloader config gives the clean faces)')
                clean_cfg = dict(dataset=main_dataset_cfg, num_workers=0)
            self.streams.append(dict(
                dataset=self._build_dataset(clean_cfg, clean=True),
                n=n_clean, clean=True,
                num_workers=int(clean_cfg.get('num_workers', 0))))
        self._iters = None
        self._expected = None

    def _open(self, epoch: int, step: int) -> None:
        self._iters = []
        for sid, s in enumerate(self.streams):
            sampler = StreamSampler(len(s['dataset']), mix_seeds(self.seed, sid),
                                    epoch, step * s['n'], self.rank,
                                    self.world_size)
            loader = DataLoader(
                PositionSeededDataset(s['dataset'], self.seed, epoch,
                                      self.rank, sid),
                batch_size=s['n'], sampler=sampler,
                num_workers=s['num_workers'], collate_fn=pseudo_collate,
                persistent_workers=False)
            self._iters.append(iter(loader))

    def next_batch(self, epoch: int, step: int) -> dict:
        """The stream batch of training step ``step`` of ``epoch`` on this rank."""
        if self._iters is None or self._expected != (epoch, step):
            self._open(epoch, step)
        inputs, samples = [], []
        for s, it in zip(self.streams, self._iters):
            batch = next(it)
            if s['clean']:
                for ds in batch['data_samples']:
                    kinds = str(ds.get('occlusion_type') or '').split('+')
                    if self._kept_kinds.intersection(kinds):
                        continue  # a kept occluder's exact mask
                    # On the model's grid; before a model was seen, the
                    # sample's own (or the default 7x7 without one).
                    shape = (1, self.grid, self.grid) if self.grid else \
                        ds.gt_visibility.shape if 'gt_visibility' in ds else \
                        (1, DEFAULT_GRID, DEFAULT_GRID)
                    ds.set_field(torch.ones(shape), 'gt_visibility')
                    ds.set_metainfo(dict(occlusion_type='none'))
            inputs.extend(batch['inputs'])
            samples.extend(batch['data_samples'])
        self._expected = (epoch, step + 1)
        return dict(inputs=inputs, data_samples=samples)

    # hook interface ----------------------------------------------------------------
    def before_train(self, runner) -> None:
        model = getattr(runner, 'model', None)
        model = getattr(model, 'module', model)  # DDP
        size = getattr(getattr(model, 'backbone', None), 'map_size', None)
        if size is not None:
            self.grid = int(size)
        loader = runner.train_dataloader
        default_bs = getattr(loader, 'batch_size', None)
        main_cfg = None
        cfg = getattr(runner, 'cfg', None)
        if cfg is not None and cfg.get('train_dataloader'):
            main_cfg = copy.deepcopy(cfg['train_dataloader'].get('dataset'))
        self.build_streams(default_bs, main_cfg, seed=getattr(runner, 'seed',
                                                              None))

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        if data_batch is None:
            return
        data_batch['occlusion'] = self.next_batch(runner.epoch, batch_idx)

    def after_train_epoch(self, runner) -> None:
        # Workers of this epoch's stream end here; the next epoch reseeds.
        self._iters = None
        if not self.log_skipped:
            return
        datasets = [s['dataset'] for s in self.streams]
        main = getattr(runner.train_dataloader, 'dataset', None)
        if main is not None:
            datasets.append(main)
        for ds in datasets:
            if hasattr(ds, 'log_skipped'):
                ds.log_skipped()

    def after_train(self, runner) -> None:
        self._iters = None
