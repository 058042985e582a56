"""Fault: NaN/Inf in the loss, the gradients or the input batch.

Injected by ``ToyNonFiniteClassifier`` (tests/toy_components.py) at chosen iterations,
or as Inf pixels fed to the tiny OAML model; the guard is
:class:`oaml_mm.engine.GuardedOptimWrapper` (its unit tests:
tests/test_engine/test_optimizers/test_guarded_optim_wrapper.py).
"""
import datetime
import json
import os
import os.path as osp
import tempfile
import unittest

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.model import MMDistributedDataParallel
from mmengine.testing import RunnerTestCase

from oaml_mm.engine import (NONFINITE_CONSECUTIVE, NONFINITE_TOTAL,
                            GuardedOptimWrapper)
from oaml_mm.errors import NonFiniteLossError
from oaml_mm.registry import RUNNERS
from oaml_mm.utils import safe_load_checkpoint
from tests.reliability._util import free_port, train
from tests.toy_components import read_losses, toy_config, write_toy_config_file


def _cfg(work_dir, max_epochs=1, guard=True, max_nonfinite_skips=10,
         **model):
    cfg = toy_config(work_dir, max_epochs=max_epochs)
    cfg['model'] = dict(type='ToyNonFiniteClassifier', **model)
    if guard:
        cfg['optim_wrapper'].update(type='GuardedOptimWrapper',
                                    max_nonfinite_skips=max_nonfinite_skips)
    cfg['val_cfg'] = cfg['val_dataloader'] = cfg['val_evaluator'] = None
    cfg['train_cfg'] = dict(by_epoch=True, max_epochs=max_epochs)
    return cfg


class TestNonFiniteTraining(RunnerTestCase):
    """The guard inside a run: skipped, counted, aborted with a checkpoint."""

    def build(self, cfg):
        cfg = Config(cfg)
        cfg.experiment_name = self.experiment_name
        return RUNNERS.build(cfg)

    def test_isolated_nan_and_inf_are_skipped(self):
        work = osp.join(self.temp_dir.name, 'a')
        runner = self.build(_cfg(work, nan_loss_iters=[1], inf_loss_iters=[3],
                                 nan_grad_iters=[4], inf_input_iters=[2]))
        runner.train()
        self.assertEqual(runner.message_hub.get_info(NONFINITE_TOTAL), 4)
        self.assertEqual(runner.message_hub.get_info(NONFINITE_CONSECUTIVE), 0)
        for name, t in runner.model.state_dict().items():
            self.assertTrue(torch.isfinite(t.float()).all(), name)
        # 6 iterations, 4 skipped: BatchNorm counted only the 2 good batches.
        self.assertEqual(int(runner.model.bn.num_batches_tracked), 2)
        # The counters travel with the checkpoint (resume keeps counting).
        ckpt = safe_load_checkpoint(osp.join(work, 'epoch_1.pth'))
        self.assertEqual(
            ckpt['message_hub']['runtime_info'][NONFINITE_TOTAL], 4)

    def test_unguarded_run_is_poisoned(self):
        # Guards the test above: the same faults without the guard ruin the weights.
        work = osp.join(self.temp_dir.name, 'b')
        runner = self.build(_cfg(work, nan_loss_iters=[1], guard=False))
        runner.train()
        self.assertFalse(torch.isfinite(runner.model.fc1.weight).all())

    def test_repeated_nan_stops_with_checkpoint(self):
        work = osp.join(self.temp_dir.name, 'c')
        runner = self.build(_cfg(work, max_epochs=2,
                                 inf_input_iters=range(2, 100),
                                 max_nonfinite_skips=3))
        with self.assertRaises(NonFiniteLossError) as ctx:
            runner.train()
        msg = str(ctx.exception)
        self.assertIn('3 consecutive updates skipped', msg)
        # Iterations 2, 3, 4 (0-based) were skipped; the file is named 1-based.
        path = osp.join(work, 'nonfinite_iter_5.pth')
        self.assertIn(path, msg)
        ckpt = safe_load_checkpoint(path)
        state = runner.model.state_dict()
        for key, value in ckpt['state_dict'].items():
            self.assertTrue(torch.isfinite(value.float()).all(), key)
            self.assertTrue(torch.equal(value, state[key]), key)
        # The Inf batches reached BatchNorm, which holds the 2 good batches only.
        self.assertEqual(int(ckpt['state_dict']['bn.num_batches_tracked']), 2)
        self.assertIn('optimizer', ckpt)
        # The skipped iterations are logged with their NaN loss; the third raised.
        losses = read_losses(work)
        self.assertEqual(sorted(losses), [0, 1, 2, 3])
        self.assertTrue(all(losses[i] != losses[i] for i in (2, 3)))

    def test_tools_train_prints_the_error(self):
        cfg_path = osp.join(self.temp_dir.name, 'nan.py')
        work = osp.join(self.temp_dir.name, 'd')
        write_toy_config_file(cfg_path, work, max_epochs=1)
        proc = train(cfg_path, '--cfg-options',
                     'model.type=ToyNonFiniteClassifier',
                     'model.nan_loss_iters=[1,2,3,4,5]',
                     'optim_wrapper.type=GuardedOptimWrapper',
                     'optim_wrapper.max_nonfinite_skips=2')
        self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
        self.assertIn('NonFiniteLossError: 2 consecutive updates skipped',
                      proc.stderr)
        self.assertNotIn('Traceback', proc.stderr)
        self.assertTrue(osp.isfile(osp.join(work, 'nonfinite_iter_3.pth')))


# --- a skipped step leaves the real model as it was (Inf pixels) -------------------


def _inf_batch(seed=0):
    """The tiny OAML batch with Inf pixels in the first image."""
    from tests.test_models.test_oaml_recognizer import batch
    data = batch(seed=seed)
    data['inputs'] = [img.float() for img in data['inputs']]
    data['inputs'][0][:, :8, :8] = float('inf')
    return data


def _eval_finite(model) -> bool:
    from tests.test_models.test_oaml_recognizer import batch
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(batch(n=2, n_occ=0, seed=5), False)
        feats = model.extract(data['inputs'], return_feature_maps=True)
    model.train()
    return all(bool(torch.isfinite(v.float()).all()) for v in feats.values())


def _changed(model, before):
    return sorted(k for k, v in model.state_dict().items()
                  if not torch.equal(v, before[k]))


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """One of two gloo ranks: rank 1 alone gets Inf pixels, then both a clean batch."""
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # A broken agreement would leave one rank in the all-reduce: fail, not hang.
    dist.init_process_group('gloo', rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        from tests.test_models.test_oaml_recognizer import batch, build
        hub = MessageHub.get_instance(f'ddp_nonfinite_{rank}')
        model = build()
        ddp = MMDistributedDataParallel(
            module=model, broadcast_buffers=False,
            find_unused_parameters=True)
        optim = GuardedOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            max_nonfinite_skips=3)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        ddp.train_step(_inf_batch() if rank == 1 else batch(seed=0), optim)
        result = dict(changed=_changed(model, before),
                      skips=hub.get_info(NONFINITE_TOTAL),
                      eval_finite=_eval_finite(model))
        ddp.train_step(batch(seed=rank), optim)
        result['changed_after_clean'] = len(_changed(model, before))
        result['kernel_sum'] = float(model.head.kernel.double().sum())
        with open(osp.join(out_dir, f'rank{rank}.json'), 'w') as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


class TestSkippedStepKeepsModel(unittest.TestCase):
    """A skipped step leaves every parameter and buffer as it was (BN included)."""

    def test_single_process(self):
        from tests.test_models.test_oaml_recognizer import build
        hub = MessageHub.get_instance('test_inf_pixels')
        model = build()
        optim = GuardedOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1,
                                      momentum=0.9),
            max_nonfinite_skips=3)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        model.train_step(_inf_batch(), optim)
        self.assertEqual(hub.get_info(NONFINITE_TOTAL), 1)
        self.assertEqual(_changed(model, before), [])
        self.assertTrue(_eval_finite(model))
        # Without the guard the same batch leaves the BN statistics non-finite,
        # and evaluation returns NaN (so this test can fail).
        from mmengine.optim import OptimWrapper
        model.train_step(_inf_batch(), OptimWrapper(optim.optimizer))
        self.assertFalse(_eval_finite(model))

    def test_ddp_two_processes(self):
        with tempfile.TemporaryDirectory() as tmp:
            mp.spawn(_ddp_worker, args=(2, free_port(), tmp), nprocs=2,
                     join=True)
            results = []
            for rank in range(2):
                with open(osp.join(tmp, f'rank{rank}.json')) as f:
                    results.append(json.load(f))
        for rank, r in enumerate(results):
            # Both ranks skip (rank 0's batch was fine), nothing changed.
            self.assertEqual(r['changed'], [], rank)
            self.assertEqual(r['skips'], 1, rank)
            self.assertTrue(r['eval_finite'], rank)
            self.assertGreater(r['changed_after_clean'], 0, rank)
        # The next, finite step updated both ranks alike.
        self.assertEqual(results[0]['kernel_sum'], results[1]['kernel_sum'])
