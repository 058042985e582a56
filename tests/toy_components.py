"""Tiny runner-level components for engine and tool tests (not part of the package).

Randomness is drawn on purpose from every generator a real run uses (numpy and python in
the data pipeline, torch in dropout) so that exact-resume tests can fail.
"""
import json
import os
import os.path as osp
import random

import numpy as np
import torch
import torch.nn as nn
from mmengine.dataset import BaseDataset
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel

from oaml_mm.registry import DATASETS, HOOKS, METRICS, MODELS


@DATASETS.register_module(force=True)
class ToyRandomDataset(BaseDataset):
    """``length`` samples of 8 features; class = index % 4; jitter from numpy/random."""

    def __init__(self, length: int = 24, **kwargs) -> None:
        self.length = length
        kwargs.setdefault('serialize_data', False)
        super().__init__(**kwargs)

    def load_data_list(self):
        gen = np.random.RandomState(1234)
        return [
            dict(x=gen.randn(8).astype(np.float32), label=i % 4)
            for i in range(self.length)
        ]

    def prepare_data(self, idx):
        item = self.get_data_info(idx)
        # Augmentation-like randomness in the main process (num_workers=0).
        x = item['x'] + 0.1 * np.random.randn(8).astype(np.float32)
        x = x * (1.0 + 0.05 * random.random())
        return dict(inputs=torch.from_numpy(x.astype(np.float32)),
                    data_samples=int(item['label']))


@MODELS.register_module(force=True)
class ToyClassifier(BaseModel):
    """Linear -> dropout -> linear classifier over ToyRandomDataset samples."""

    def __init__(self, data_preprocessor=None) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        self.fc1 = nn.Linear(8, 16)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        if isinstance(inputs, (list, tuple)):
            inputs = torch.stack(inputs)
        logits = self.fc2(self.drop(torch.relu(self.fc1(inputs))))
        if mode == 'tensor':
            return logits
        labels = torch.as_tensor(data_samples)
        if mode == 'loss':
            return dict(loss=nn.functional.cross_entropy(logits, labels))
        return [(int(p), int(t)) for p, t in zip(logits.argmax(1), labels)]


@METRICS.register_module(force=True)
class ToyAccuracy(BaseMetric):

    def process(self, data_batch, data_samples):
        self.results.extend(data_samples)

    def compute_metrics(self, results):
        correct = sum(int(p == t) for p, t in results)
        return dict(accuracy=100.0 * correct / max(len(results), 1))


@HOOKS.register_module(force=True)
class LossRecorderHook(Hook):
    """Append ``{"iter": i, "loss": value}`` lines to work_dir/losses-rank{r}.jsonl."""

    priority = 'VERY_LOW'

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        path = osp.join(runner.work_dir, f'losses-rank{runner.rank}.jsonl')
        with open(path, 'a') as f:
            f.write(json.dumps(dict(iter=runner.iter,
                                    loss=float(outputs['loss'].detach()))) + '\n')


class Interrupt(Exception):
    """Raised by InterruptHook to stop a run as a crash would."""


@HOOKS.register_module(force=True)
class InterruptHook(Hook):
    """Raise :class:`Interrupt` (or SIGKILL the process) after iteration ``at_iter``."""

    def __init__(self, at_iter: int, sigkill: bool = False) -> None:
        self.at_iter = at_iter
        self.sigkill = sigkill

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter + 1 >= self.at_iter:
            if self.sigkill:
                os.kill(os.getpid(), 9)
            raise Interrupt(f'interrupted at iter {runner.iter + 1}')


def toy_config(work_dir: str, max_epochs: int = 3, batch_size: int = 4,
               extra_hooks=()) -> dict:
    """A complete epoch-based config dict for the toy components."""
    return dict(
        default_scope='oaml_mm',
        runner_type='OAMLRunner',
        custom_imports=dict(imports=['tests.toy_components'],
                            allow_failed_imports=False),
        work_dir=work_dir,
        model=dict(type='ToyClassifier'),
        train_dataloader=dict(
            dataset=dict(type='ToyRandomDataset', length=24),
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate'),
            batch_size=batch_size,
            num_workers=0),
        val_dataloader=dict(
            dataset=dict(type='ToyRandomDataset', length=8),
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            batch_size=4,
            num_workers=0),
        val_evaluator=dict(type='ToyAccuracy'),
        test_dataloader=dict(
            dataset=dict(type='ToyRandomDataset', length=8),
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            batch_size=4,
            num_workers=0),
        test_evaluator=dict(type='ToyAccuracy'),
        optim_wrapper=dict(
            type='OptimWrapper',
            optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        param_scheduler=[
            dict(type='MultiStepLR', by_epoch=True, milestones=[2],
                 gamma=0.1)
        ],
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs, val_interval=1),
        val_cfg=dict(),
        test_cfg=dict(),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1,
                            max_keep_ckpts=3),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='LossRecorderHook'), *extra_hooks],
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        randomness=dict(seed=42),
        log_level='WARNING',
    )


def read_losses(work_dir: str, rank: int = 0) -> dict:
    """{iter: loss} recorded by LossRecorderHook (later lines win)."""
    out = {}
    path = osp.join(work_dir, f'losses-rank{rank}.jsonl')
    with open(path) as f:
        for line in f:
            item = json.loads(line)
            out[item['iter']] = item['loss']
    return out


@HOOKS.register_module(force=True)
class FinalWeightsHook(Hook):
    """Save every rank's final weights to work_dir/final-rank{r}.pth."""

    def after_train(self, runner):
        model = runner.model.module if hasattr(runner.model,
                                               'module') else runner.model
        torch.save(model.state_dict(),
                   osp.join(runner.work_dir, f'final-rank{runner.rank}.pth'))


def write_toy_config_file(path: str, work_dir: str, **kwargs) -> str:
    """Write :func:`toy_config` as a python config file usable by the tools."""
    from mmengine.config import Config
    cfg = toy_config(work_dir, **kwargs)
    cfg['custom_hooks'].append(dict(type='FinalWeightsHook'))
    Config(cfg).dump(path)
    return path


# --- reliability (tests/reliability): fault injection -------------------------------


class _PoisonGrad(torch.autograd.Function):
    """Identity forward; the backward pass returns NaN gradients."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float('nan')


@MODELS.register_module(force=True)
class ToyNonFiniteClassifier(ToyClassifier):
    """ToyClassifier with batch norm whose loss (or gradient) is NaN/Inf at chosen
    iterations, or whose input is Inf (which also poisons the BN statistics).

    It trains through mmengine's ``train_step``: the guard is the optimizer wrapper
    (``GuardedOptimWrapper``) or, with plain ``OptimWrapper``, nothing.
    """

    def __init__(self, nan_loss_iters=(), nan_grad_iters=(), inf_loss_iters=(),
                 inf_input_iters=(), data_preprocessor=None) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        self.bn = nn.BatchNorm1d(16)
        self.nan_loss_iters = set(nan_loss_iters)
        self.nan_grad_iters = set(nan_grad_iters)
        self.inf_loss_iters = set(inf_loss_iters)
        self.inf_input_iters = set(inf_input_iters)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        from mmengine.logging import MessageHub
        it = MessageHub.get_current_instance().get_info('iter', 0)
        if isinstance(inputs, (list, tuple)):
            inputs = torch.stack(inputs)
        if mode == 'loss' and it in self.inf_input_iters:
            inputs = inputs.clone()
            inputs[0, 0] = float('inf')
        logits = self.fc2(self.drop(torch.relu(self.bn(self.fc1(inputs)))))
        if mode == 'tensor':
            return logits
        labels = torch.as_tensor(data_samples)
        if mode != 'loss':
            return [(int(p), int(t)) for p, t in zip(logits.argmax(1), labels)]
        if it in self.nan_grad_iters:
            logits = _PoisonGrad.apply(logits)
        loss = nn.functional.cross_entropy(logits, labels)
        if it in self.nan_loss_iters:
            loss = loss * float('nan')
        if it in self.inf_loss_iters:
            loss = loss + float('inf')
        return dict(loss=loss)


@HOOKS.register_module(force=True)
class RankKillHook(Hook):
    """SIGKILL rank ``rank`` after iteration ``at_iter``, writing the time first."""

    def __init__(self, at_iter: int, rank: int = 1, stamp: str = '') -> None:
        self.at_iter = at_iter
        self.rank = rank
        self.stamp = stamp

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.rank == self.rank and runner.iter + 1 >= self.at_iter:
            import time
            if self.stamp:
                with open(self.stamp, 'w') as f:
                    f.write(repr(time.time()))
            os.kill(os.getpid(), 9)


@HOOKS.register_module(force=True)
class KillDuringCheckpointWriteHook(Hook):
    """SIGKILL the process in the middle of writing checkpoint number ``at_save``.

    The next fsync of the atomic backend first cuts the temporary file to half its
    size, as a crash after a partial write would leave it, then kills the process.
    """

    def __init__(self, at_save: int) -> None:
        self.at_save = at_save
        self.saves = 0

    def before_save_checkpoint(self, runner, checkpoint):
        self.saves += 1
        if self.saves != self.at_save:
            return
        from oaml_mm.engine.runner import atomic_backend

        def fsync_then_die(fd):
            size = os.fstat(fd).st_size
            os.ftruncate(fd, size // 2)
            os.kill(os.getpid(), 9)

        atomic_backend.os = _OsWith(fsync=fsync_then_die)


class _OsWith:
    """The ``os`` module with some functions replaced (for one module's use)."""

    def __init__(self, **overrides) -> None:
        self._overrides = overrides

    def __getattr__(self, name):
        if name in self._overrides:
            return self._overrides[name]
        return getattr(os, name)


def tiny_oaml(num_classes: int = 4, **overrides) -> dict:
    """Config of the narrowest OAMLRecognizer (IR-18 at width 1/8, 16-d embedding) for
    model-level tests; ``overrides`` replace top-level keys (e.g. ``test_cfg``)."""
    cfg = dict(
        type='OAMLRecognizer',
        backbone=dict(type='IResNet', depth=18, width_mult=0.125,
                      embedding_size=16, dropout=0.0),
        neck=dict(type='OcclusionHead', in_channels=64, hidden_channels=8),
        head=dict(type='AdaFaceHead', in_channels=16, num_classes=num_classes),
        qaconv_head=dict(type='QAConvHead', in_channels=64))
    cfg.update(overrides)
    return cfg
