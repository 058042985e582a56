"""Validation/test loops that hand the model to the face metrics.

mmengine's ``ValLoop``/``TestLoop`` give metrics only the predictions. QAConv scores
need the model's matcher, so these loops call ``metric.bind_model(model)`` (and
``metric.set_dataset_size(n)``, so repeated DDP padding samples are ignored) on every
metric that defines them, show a tqdm bar with ETA on rank 0, and otherwise behave
like mmengine's loops. ``FaceValLoop`` also accepts a *list* of dataloaders with a
list of evaluators (one per validation set), e.g. LFW, CFP-FP and AgeDB-30 at once.
"""
import hashlib
from typing import Dict, List, Sequence, Union

import torch
from mmengine.dist import get_dist_info
from mmengine.evaluator import Evaluator
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import IterBasedTrainLoop, TestLoop, ValLoop
from mmengine.runner.amp import autocast
from torch.utils.data import DataLoader

from oaml_mm.errors import ConfigError
from oaml_mm.registry import LOOPS

__all__ = [
    'FaceValLoop', 'FaceTestLoop', 'OAMLIterBasedTrainLoop', 'bind_metrics',
    'PredictionCache'
]


def bind_metrics(evaluator: Evaluator, model: torch.nn.Module,
                 dataset_size: int) -> None:
    """Call ``bind_model`` / ``set_dataset_size`` on the metrics that have them."""
    if is_model_wrapper(model):
        model = model.module
    for metric in evaluator.metrics:
        if hasattr(metric, 'bind_model'):
            metric.bind_model(model)
        if hasattr(metric, 'set_dataset_size'):
            metric.set_dataset_size(dataset_size)


def _progress(dataloader, desc: str, enabled: bool):
    rank, _ = get_dist_info()
    if not enabled or rank != 0:
        return dataloader
    from tqdm import tqdm
    return tqdm(dataloader, desc=desc, unit='batch', mininterval=2.0,
                leave=False)


class PredictionCache:
    """Predictions of the images already seen in one evaluation pass, by content.

    Verification ``.bin`` files list every pair's two images, so one image appears
    in many slots (SynthFace's seven sets: 42,000 slots, 6,339 distinct images).
    The loops run the model on an image's first occurrence only and give the later
    ones a copy of its prediction fields; each slot keeps its own metainfo
    (pair index, slot, true visibility). The key is a BLAKE2 digest of the packed
    input tensor, so only byte-identical inputs share a prediction. The cache holds
    every distinct image's prediction (feature maps included) until the pass ends:
    leave it off where images do not repeat (IJB-C) or memory is short. It assumes
    the model's prediction depends on the image only, not on a sample's metainfo
    (true of every oaml_mm model), and it changes which images share a forward, so
    under fp16 or non-deterministic GPU kernels scores may differ in the last bits.
    """

    def __init__(self) -> None:
        self._store: Dict[bytes, Dict[str, torch.Tensor]] = {}

    def clear(self) -> None:
        self._store.clear()

    def __len__(self) -> int:
        return len(self._store)

    @staticmethod
    def key(image: torch.Tensor) -> bytes:
        data = image.detach().cpu().contiguous().numpy()
        h = hashlib.blake2b(data.tobytes(), digest_size=16)
        h.update(repr((tuple(data.shape), str(data.dtype))).encode())
        return h.digest()

    def step(self, data_batch: dict, forward) -> list:
        """``forward(batch) -> outputs`` on the batch's unseen images only.

        Args:
            data_batch (dict): ``inputs`` (list of packed image tensors) and
                ``data_samples`` (list of DataSample), as the dataloader gives.
            forward (callable): The model's ``val_step``/``test_step``.

        Returns:
            list: One DataSample per input, in order, with the prediction fields.
        """
        inputs, samples = data_batch['inputs'], data_batch['data_samples']
        if not isinstance(inputs, (list, tuple)) or \
                len(inputs) != len(samples) or \
                not all(isinstance(x, torch.Tensor) for x in inputs):
            # A stacked batch or test-time-augmentation views: nothing to pick.
            return forward(data_batch)
        keys = [self.key(x) for x in inputs]
        first: Dict[bytes, int] = {}
        for i, k in enumerate(keys):
            if k not in self._store and k not in first:
                first[k] = i
        outputs: List = [None] * len(samples)
        if first:
            idx = list(first.values())
            before = [set(samples[i].keys()) for i in idx]
            sub = dict(data_batch, inputs=[inputs[i] for i in idx],
                       data_samples=[samples[i] for i in idx])
            for i, known, out in zip(idx, before, forward(sub)):
                self._store[keys[i]] = {
                    name: out.get(name) for name in out.keys()
                    if name not in known}
                outputs[i] = out
        for i, k in enumerate(keys):
            if outputs[i] is None:
                for name, value in self._store[k].items():
                    # A copy: a metric changing one slot's prediction in place
                    # must not change the others'.
                    if isinstance(value, torch.Tensor):
                        value = value.clone()
                    samples[i].set_field(value, name, field_type='data')
                outputs[i] = samples[i]
        return outputs


class _FaceLoopMixin:

    def _run_one(self, dataloader, evaluator, desc: str, step) -> dict:
        bind_metrics(evaluator, self.runner.model, len(dataloader.dataset))
        try:
            for idx, data_batch in enumerate(
                    _progress(dataloader, desc, self.progress)):
                step(idx, data_batch, evaluator)
        finally:
            if self.cache is not None:
                self.cache.clear()
        return evaluator.evaluate(len(dataloader.dataset))

    def _forward(self, data_batch: dict, forward) -> list:
        if self.cache is None:
            return forward(data_batch)
        return self.cache.step(data_batch, forward)


@LOOPS.register_module()
class FaceValLoop(_FaceLoopMixin, ValLoop):
    """``ValLoop`` that binds the model to the metrics; one or several val sets.

    Args:
        runner (Runner): The runner.
        dataloader (DataLoader | dict | list): One dataloader (config) or a list.
        evaluator (Evaluator | dict | list): With a list of dataloaders, a list of
            the same length (each a metric config or a list of them).
        fp16 (bool): Autocast the forward. Defaults to False.
        progress (bool): tqdm bar on rank 0. Defaults to True.
        dedupe (bool): Run the model once per distinct image of a pass
            (:class:`PredictionCache`); for ``.bin`` sets, whose pairs reuse
            images. Defaults to False.

    Example:
        >>> val_cfg = dict(type='FaceValLoop')
        >>> val_dataloader = [lfw_loader, agedb_loader]
        >>> val_evaluator = [dict(type='VerificationMetric', dataset_name='lfw'),
        ...                  dict(type='VerificationMetric', dataset_name='agedb_30')]
    """

    def __init__(self, runner, dataloader: Union[DataLoader, Dict, List],
                 evaluator: Union[Evaluator, Dict, List], fp16: bool = False,
                 progress: bool = True, dedupe: bool = False) -> None:
        self.progress = progress
        self.cache = PredictionCache() if dedupe else None
        if isinstance(dataloader, (list, tuple)):
            if not isinstance(evaluator, (list, tuple)) or \
                    len(evaluator) != len(dataloader):
                from oaml_mm.errors import ConfigError
                raise ConfigError(
                    f'{len(dataloader)} val dataloaders need a list of '
                    f'{len(dataloader)} evaluators, got {evaluator!r}')
            super().__init__(runner, dataloader[0], evaluator[0], fp16)
            self.dataloaders = [self.dataloader] + [
                runner.build_dataloader(d, seed=runner.seed)
                if isinstance(d, dict) else d for d in dataloader[1:]
            ]
            self.evaluators = [self.evaluator] + [
                runner.build_evaluator(e) if isinstance(e, (dict, list)) else e
                for e in evaluator[1:]
            ]
            for dl, ev in zip(self.dataloaders[1:], self.evaluators[1:]):
                if hasattr(dl.dataset, 'metainfo'):
                    ev.dataset_meta = dl.dataset.metainfo
        else:
            super().__init__(runner, dataloader, evaluator, fp16)
            self.dataloaders = [self.dataloader]
            self.evaluators = [self.evaluator]

    def run(self) -> dict:
        """Validate on every set; returns the union of their metrics."""
        self.runner.call_hook('before_val')
        self.runner.call_hook('before_val_epoch')
        self.runner.model.eval()
        self.val_loss.clear()
        metrics: Dict[str, float] = {}
        for dl, ev in zip(self.dataloaders, self.evaluators):
            metrics.update(self._run_one(dl, ev, 'val', self._step))
        self.runner.call_hook('after_val_epoch', metrics=metrics)
        self.runner.call_hook('after_val')
        return metrics

    @torch.no_grad()
    def _step(self, idx: int, data_batch: Sequence[dict], evaluator) -> None:
        self.runner.call_hook(
            'before_val_iter', batch_idx=idx, data_batch=data_batch)
        with autocast(enabled=self.fp16):
            outputs = self._forward(data_batch, self.runner.model.val_step)
        evaluator.process(data_samples=outputs, data_batch=data_batch)
        self.runner.call_hook(
            'after_val_iter', batch_idx=idx, data_batch=data_batch,
            outputs=outputs)


@LOOPS.register_module()
class FaceTestLoop(_FaceLoopMixin, TestLoop):
    """``TestLoop`` that binds the model to the metrics before evaluating.

    Args:
        runner (Runner): The runner.
        dataloader (DataLoader | dict): The test dataloader.
        evaluator (Evaluator | dict | list): Metrics.
        fp16 (bool): Autocast the forward. Defaults to False.
        progress (bool): tqdm bar on rank 0. Defaults to True.
        dedupe (bool): Run the model once per distinct image
            (:class:`PredictionCache`). Defaults to False.

    Example:
        >>> test_cfg = dict(type='FaceTestLoop', dedupe=True)  # .bin sets
    """

    def __init__(self, runner, dataloader: Union[DataLoader, Dict],
                 evaluator: Union[Evaluator, Dict, List], fp16: bool = False,
                 progress: bool = True, dedupe: bool = False) -> None:
        super().__init__(runner, dataloader, evaluator, fp16)
        self.progress = progress
        self.cache = PredictionCache() if dedupe else None

    def run(self) -> dict:
        """Run the test set through the model and evaluate."""
        self.runner.call_hook('before_test')
        self.runner.call_hook('before_test_epoch')
        self.runner.model.eval()
        self.test_loss.clear()
        metrics = self._run_one(self.dataloader, self.evaluator, 'test',
                                self._step)
        self.runner.call_hook('after_test_epoch', metrics=metrics)
        self.runner.call_hook('after_test')
        return metrics

    @torch.no_grad()
    def _step(self, idx: int, data_batch: Sequence[dict], evaluator) -> None:
        self.runner.call_hook(
            'before_test_iter', batch_idx=idx, data_batch=data_batch)
        with autocast(enabled=self.fp16):
            outputs = self._forward(data_batch, self.runner.model.test_step)
        evaluator.process(data_samples=outputs, data_batch=data_batch)
        self.runner.call_hook(
            'after_test_iter', batch_idx=idx, data_batch=data_batch,
            outputs=outputs)


class _LazyIterator:
    """An iterator built on the first ``next`` (or attribute access)."""

    def __init__(self, make) -> None:
        self._make = make
        self._it = None

    @classmethod
    def factory(cls, iterator_cls):
        return lambda dataloader: cls(lambda: iterator_cls(dataloader))

    def _get(self):
        if self._it is None:
            self._it = self._make()
        return self._it

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._get())

    def __getattr__(self, name):
        return getattr(self._get(), name)


@LOOPS.register_module()
class OAMLIterBasedTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` whose resume draws the same random numbers.

    On resume mmengine's loop fast-forwards the dataloader by the iterations
    already trained, *after* the random generator states were restored from the
    checkpoint: with ``num_workers=0`` the skipped batches' augmentations run in
    the main process and consume numpy/python/torch randomness, so every later
    batch and dropout mask differs from the uninterrupted run. This loop puts the
    checkpoint's generator states back once the fast-forward is done (the
    generator states of the moment before it when the checkpoint holds none).

    With ``num_workers > 0`` the workers reproduce the skipped batches
    themselves: they are reseeded from ``randomness.seed`` whenever the dataloader
    is (re)started, so the batches after the resume point are the same too, as
    long as the sampler's order depends only on the seed and the epoch
    (mmengine's ``DefaultSampler``/``InfiniteSampler``, oaml_mm's samplers).

    :class:`~oaml_mm.engine.runner.OAMLRunner` uses it in place of
    ``IterBasedTrainLoop`` (``train_cfg = dict(by_epoch=False, ...)``); the
    arguments are those of ``IterBasedTrainLoop``.

    Example:
        >>> train_cfg = dict(type='OAMLIterBasedTrainLoop', max_iters=20000)
    """

    def __init__(self, *args, **kwargs) -> None:
        # mmengine starts the training dataloader here, when the runner builds
        # the loop: with workers its first indices are drawn at once, before the
        # ``before_train`` hooks run, and a sampler that a hook prepares (the
        # GraphSampler's class graph, GraphSamplerHook) is not ready then. Start
        # it on first use instead, inside :meth:`run`.
        loops_module = IterBasedTrainLoop.__init__.__globals__
        eager = loops_module['_InfiniteDataloaderIterator']
        loops_module['_InfiniteDataloaderIterator'] = _LazyIterator.factory(eager)
        try:
            super().__init__(*args, **kwargs)
        finally:
            loops_module['_InfiniteDataloaderIterator'] = eager

    def run(self) -> torch.nn.Module:
        """Fast-forward to the resumed iteration, then train as mmengine does."""
        from oaml_mm.engine.hooks.safe_checkpoint_hook import (get_rng_state,
                                                               set_rng_state)
        if self._iter >= self._max_iters > 0:
            # Before the fast-forward, which would run every trained batch.
            raise ConfigError(
                f'resumed at iteration {self._iter}, but train_cfg.max_iters is '
                f'{self._max_iters}: nothing is left to train. Raise it (e.g. '
                f'--cfg-options train_cfg.max_iters={2 * self._iter}) to train '
                'on, or run tools/test.py on the checkpoint')
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')
        if self._iter > 0:
            print_log(f'Advance dataloader {self._iter} steps to skip data '
                      'that has already been trained', logger='current')
            state = getattr(self.runner, 'resumed_rng_state', None) or \
                get_rng_state()
            for _ in range(self._iter):
                next(self.dataloader_iterator)
            set_rng_state(state)
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            data_batch = next(self.dataloader_iterator)
            self.run_iter(data_batch)
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None
                    and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0
                         or self._iter == self._max_iters)):
                self.runner.val_loop.run()
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model
