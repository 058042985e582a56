"""Training-step benchmark: one OAML iteration through the Runner vs a bare loop.

One full OAML iteration: a PK main batch (AdaFace + QAConv pairwise/triplet losses)
plus the occlusion stream of ``DualLoaderHook`` (80% occluded with masks, 20% clean;
occlusion-head MSE), backward, SGD step. It is timed two ways in one process, from the
same initial weights on the same images:

* ``runner``: ``OAMLRunner`` with ``IterBasedTrainLoop``, the default hooks (timer,
  logger, param scheduler, checkpoint (none due), ...), ``DualLoaderHook``, a
  DataLoader over an in-memory data set (no decoding: decode + augmentation are
  ``bench_data.py``'s business), ``FaceDataPreprocessor`` and the guarded update
  (``GuardedOptimWrapper``, as in every shipped config);
* ``bare``: a plain PyTorch loop over the same batches, already collated and
  normalised, calling ``model.loss`` -> sum -> backward -> ``SGD.step``.

``overhead = runner / bare - 1`` is what the Runner, hooks and data handling cost. Aim
(issue 7): below 10%. The model is a narrow IR-18 (width 0.25, 128-d, the size of the
CPU feasibility study in docs/synthface.md) so that it runs in seconds; with a wider
model the fixed per-iteration overhead weighs even less.

Usage:
    python benchmarks/bench_train_step.py --help
    python benchmarks/bench_train_step.py --quick --threads 1
    python benchmarks/bench_train_step.py --device cuda     # AMP (fp16) both sides
"""
import argparse
import copy
import logging
import statistics
import tempfile
import time
from typing import List, Optional

import torch

try:
    from benchmarks.common import (add_common_args, make_row, print_rows,
                                   setup_threads)
except ImportError:  # run as a script
    from common import add_common_args, make_row, print_rows, setup_threads

IDS, K = 4, 4  # PK batch: 4 identities x 4 images
SIZE = 112


class InMemoryFaces(torch.utils.data.Dataset):
    """Packed samples (``PackFaceInputs`` output) held in memory.

    Args:
        num (int): Images.
        occluded (bool): Give the lower half of each face zero visibility.
        seed (int): Image seed.
    """

    pipeline = None  # DualLoaderHook inspects a data set's pipeline

    def __init__(self, num: int, occluded: bool, seed: int) -> None:
        from mmpretrain.structures import DataSample
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (num, 3, SIZE, SIZE), generator=g,
                                    dtype=torch.uint8)
        self.samples = []
        for i in range(num):
            ds = DataSample().set_gt_label(i // K)
            if occluded:
                vis = torch.ones(1, 7, 7)
                vis[:, 4:] = 0
                ds.set_field(vis, 'gt_visibility')
            self.samples.append(ds)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        return dict(inputs=self.images[i], data_samples=copy.deepcopy(
            self.samples[i]))


def model_cfg(num_classes: int, width: float = 0.25) -> dict:
    """OAML on a narrow IR-18 (the CPU size of docs/synthface.md)."""
    c = int(512 * width)
    return dict(
        type='OAMLRecognizer',
        backbone=dict(type='IResNet', depth=18, width_mult=width,
                      embedding_size=128),
        neck=dict(type='OcclusionHead', in_channels=c, hidden_channels=32),
        head=dict(type='AdaFaceHead', in_channels=128, num_classes=num_classes),
        qaconv_head=dict(type='QAConvHead', in_channels=c))


class _IterClock:
    """Wall-clock stamps after each iteration past the warm-up ones."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.stamps: List[float] = []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if runner.iter + 1 >= self.warmup:
            self.stamps.append(time.perf_counter())


def _runner(model, dataset, occluded, clean, iters, work_dir, device, amp,
            clock):
    from mmengine.hooks import Hook

    from oaml_mm.engine import OAMLRunner
    from oaml_mm.engine.hooks import DualLoaderHook

    class Clock(Hook):
        priority = 'VERY_LOW'

        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None):
            clock.after_train_iter(runner, batch_idx, data_batch, outputs)

    optim = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4)
    return OAMLRunner(
        model=model,
        work_dir=work_dir,
        train_dataloader=dict(
            dataset=dataset, batch_size=IDS * K, num_workers=0,
            sampler=dict(type='InfiniteSampler', shuffle=False)),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=iters),
        optim_wrapper=dict(
            type='GuardedAmpOptimWrapper' if amp else 'GuardedOptimWrapper',
            optimizer=optim),
        default_hooks=dict(
            timer=dict(type='IterTimerHook'),
            logger=dict(type='LoggerHook', interval=10),
            param_scheduler=dict(type='ParamSchedulerHook'),
            checkpoint=dict(type='CheckpointHook', interval=10**9,
                            by_epoch=False, save_last=False)),
        custom_hooks=[
            DualLoaderHook(dict(dataset=occluded), dict(dataset=clean),
                           occluded_ratio=0.8, seed=0),
            Clock()
        ],
        launcher='none',
        default_scope='oaml_mm',
        log_level='WARNING',
        randomness=dict(seed=0),
        env_cfg=dict(cudnn_benchmark=False),
        cfg=dict(device=str(device)))


def run(quick: bool = False, device: str = 'cpu', iters: Optional[int] = None,
        repeats: Optional[int] = None, width: float = 0.25) -> List[dict]:
    """Run the benchmark.

    Args:
        quick (bool): 6 timed iterations per side and 3 repeats (else 20 and 3).
        device (str): ``'cpu'`` (fp32) or ``'cuda'`` (AMP fp16 on both sides).
        iters (int, optional): Timed iterations per repeat.
        repeats (int, optional): Repeats; medians are reported.
        width (float): IR-18 width multiplier.

    Returns:
        list[dict]: Result rows; the ``runner`` row's ``note`` holds images/s.
    """
    from mmengine.logging import MMLogger
    from mmengine.registry import DefaultScope

    import oaml_mm  # noqa: F401
    from oaml_mm.registry import MODELS
    dev = torch.device(device)
    amp = dev.type == 'cuda'
    iters = iters or (6 if quick else 20)
    repeats = repeats or 3
    warmup = 2
    n = IDS * K * (iters + warmup)
    main = InMemoryFaces(n, occluded=False, seed=0)
    occluded = InMemoryFaces(64, occluded=True, seed=1)
    clean = InMemoryFaces(16, occluded=False, seed=2)
    if DefaultScope.get_current_instance() is None:
        DefaultScope.get_instance('bench_train_step', scope_name='oaml_mm')
    torch.manual_seed(0)
    init = MODELS.build(model_cfg(n // K, width))
    state = copy.deepcopy(init.state_dict())

    # The bare loop's batches: what the Runner's loader + hook + preprocessor make,
    # computed once here so that the bare loop times model work only.
    from mmengine.dataset import pseudo_collate

    from oaml_mm.engine.hooks import DualLoaderHook
    hook = DualLoaderHook(dict(dataset=occluded), dict(dataset=clean),
                          occluded_ratio=0.8, seed=0)
    hook.build_streams(IDS * K)
    pre = init.data_preprocessor.to(dev)
    batches = []
    for it in range(iters + warmup):
        data = pseudo_collate([main[i] for i in range(it * IDS * K,
                                                      (it + 1) * IDS * K)])
        data['occlusion'] = hook.next_batch(0, it)
        batches.append(pre(data, True))

    def bare() -> float:
        model = MODELS.build(model_cfg(n // K, width)).to(dev).train()
        model.load_state_dict(state)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                              weight_decay=5e-4)
        scaler = torch.amp.GradScaler('cuda') if amp else None
        t0 = 0.0
        for it, b in enumerate(batches):
            if it == warmup:
                if amp:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            with torch.autocast(dev.type, torch.float16, enabled=amp):
                losses = model.loss(b['inputs'], b['data_samples'],
                                    b['occlusion'])
            loss = sum(v for k, v in losses.items() if k.startswith('loss'))
            opt.zero_grad()
            if amp:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
        if amp:
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / iters

    def through_runner() -> float:
        model = MODELS.build(model_cfg(n // K, width))
        model.load_state_dict(state)
        clock = _IterClock(warmup)
        with tempfile.TemporaryDirectory() as work:
            runner = _runner(model, main, occluded, clean, iters + warmup, work,
                             dev, amp, clock)
            runner.train()
            MMLogger.get_current_instance().handlers.clear()
            logging.getLogger().handlers.clear()
        return (clock.stamps[-1] - clock.stamps[0]) / (len(clock.stamps) - 1)

    times = {'bare': [], 'runner': []}
    for _ in range(repeats):
        times['bare'].append(bare())
        times['runner'].append(through_runner())
    t_bare = statistics.median(times['bare'])
    t_runner = statistics.median(times['runner'])
    overhead = t_runner / t_bare - 1
    imgs = IDS * K
    note = (f'IR-18 width {width}, batch {imgs} + occlusion stream {imgs}, '
            f"{iters} timed iterations x {repeats} repeats, "
            f"{'AMP fp16' if amp else 'fp32'} on {device}; overhead "
            f'{overhead * 100:+.1f}%')
    return [
        make_row('train_step/runner', t_runner * 1000, 'ms/iter',
                 'bare PyTorch loop, same tensors', t_bare * 1000,
                 higher_is_better=False, aim='Runner+hooks+data overhead < 10%',
                 met=overhead < 0.10, note=note),
        make_row('train_step/model_consumption', imgs / t_runner,
                 'main-batch images/s', None, None,
                 note='images of the main stream the model trains on per '
                 'second (plus as many occlusion-stream images)'),
    ]


def main(argv=None) -> List[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.split('\n')[1:]))
    add_common_args(parser)
    parser.add_argument('--iters', type=int, default=None,
                        help='timed iterations per repeat (20, 6 with --quick)')
    parser.add_argument('--width', type=float, default=0.25,
                        help='IR-18 width multiplier (default 0.25)')
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    rows = run(args.quick, args.device, args.iters, args.repeats, args.width)
    print_rows(rows)
    return rows


if __name__ == '__main__':
    main()
