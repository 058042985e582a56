"""GuardedOptimWrapper: non-finite updates skipped, counted and undone (buffers too),
alone, composed with mixed precision, and under mmengine's own DDP wrapper."""
import copy
import os
import unittest
from unittest import mock

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.model import BaseModel, MMDistributedDataParallel
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from oaml_mm.engine import (NONFINITE_CONSECUTIVE, NONFINITE_TOTAL,
                            BF16AutocastOptimWrapper, GuardedAmpOptimWrapper,
                            GuardedBF16AutocastOptimWrapper,
                            GuardedOptimWrapper)
from oaml_mm.errors import ConfigError, NonFiniteLossError
from oaml_mm.registry import OPTIM_WRAPPERS
from tests.reliability._util import free_port
from tests.test_models.test_oaml_recognizer import batch, build


class _BNNet(BaseModel):
    """Linear -> BatchNorm; ``forward(mode='loss')`` adds ``extra`` to the loss dict."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.extra = {}

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.bn(self.fc(inputs))
        if mode == 'tensor':
            return out
        return dict(loss=(out ** 2).mean(), **self.extra)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class TestGuardedOptimWrapper(unittest.TestCase):

    def setUp(self):
        torch.manual_seed(0)
        self.hub = MessageHub.get_instance(f'test_guard_{self.id()}')
        self.model = torch.nn.Linear(3, 1)
        self.wrapper = GuardedOptimWrapper(
            optimizer=torch.optim.SGD(self.model.parameters(), lr=0.1,
                                      momentum=0.9),
            max_nonfinite_skips=10)
        self.x = torch.randn(4, 3)

    def _loss(self, scale=1.0):
        return (self.model(self.x) ** 2).mean() * scale

    def test_registered(self):
        for cls in (GuardedOptimWrapper, GuardedAmpOptimWrapper,
                    GuardedBF16AutocastOptimWrapper):
            self.assertIs(OPTIM_WRAPPERS.get(cls.__name__), cls)

    def test_finite_update_steps_and_resets(self):
        self.hub.update_info(NONFINITE_CONSECUTIVE, 2)
        before = self.model.weight.detach().clone()
        self.wrapper.update_params(self._loss())
        self.assertFalse(torch.equal(before, self.model.weight))
        self.assertEqual(self.hub.get_info(NONFINITE_CONSECUTIVE), 0)

    def test_nonfinite_loss_skips_and_counts(self):
        before = self.model.weight.detach().clone()
        for i, bad in enumerate([float('nan'), float('inf'), -float('inf')]):
            self.wrapper.update_params(self._loss(bad))
            self.assertEqual(self.hub.get_info(NONFINITE_CONSECUTIVE), i + 1)
        self.assertTrue(torch.equal(before, self.model.weight))
        self.assertIsNone(self.model.weight.grad)
        self.assertEqual(self.hub.get_info(NONFINITE_TOTAL), 3)
        # Logged as train/nonfinite_skips (the logger prints nonfinite_skips).
        self.assertEqual(
            self.hub.get_scalar('train/nonfinite_skips').current(), 3.0)

    def test_nonfinite_grad_skips(self):
        before = self.model.weight.detach().clone()
        # Finite loss, NaN gradient: sqrt'(0) * 0 = inf * 0.
        loss = torch.sqrt(self.model.weight * 0).sum() + self._loss()
        self.assertTrue(torch.isfinite(loss))
        self.wrapper.update_params(loss)
        self.assertTrue(torch.equal(before, self.model.weight))
        self.assertEqual(self.hub.get_info(NONFINITE_TOTAL), 1)
        # Guard off: the same update poisons the weights (so the test can fail).
        plain = OptimWrapper(self.wrapper.optimizer)
        plain.update_params(
            (torch.sqrt(self.model.weight * 0)).sum() + self._loss())
        self.assertFalse(torch.isfinite(self.model.weight).all())

    def test_consecutive_limit_raises(self):
        self.wrapper.max_nonfinite_skips = 2
        self.wrapper.update_params(self._loss(float('nan')))
        with self.assertRaisesRegex(NonFiniteLossError,
                                    '2 consecutive updates skipped.*nan'):
            self.wrapper.update_params(self._loss(float('nan')))

    def test_limit_below_one_refused(self):
        with self.assertRaisesRegex(ConfigError, 'max_nonfinite_skips'):
            GuardedOptimWrapper(
                optimizer=torch.optim.SGD(self.model.parameters(), lr=0.1),
                max_nonfinite_skips=0)

    def test_dict_of_losses(self):
        # Only keys containing 'loss' are summed (mmengine's parse_losses), so a
        # NaN accuracy does not skip, a NaN loss term does.
        model = _BNNet()
        wrapper = GuardedOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
        x = dict(inputs=torch.randn(4, 3))
        model.extra = dict(loss_b=torch.tensor(float('nan')),
                           acc=torch.tensor(float('nan')))
        model.train_step(x, wrapper)
        self.assertEqual(self.hub.get_info(NONFINITE_TOTAL), 1)
        model.extra = dict(acc=torch.tensor(float('nan')))
        model.train_step(x, wrapper)
        self.assertEqual(self.hub.get_info(NONFINITE_TOTAL), 1)
        self.assertEqual(self.hub.get_info(NONFINITE_CONSECUTIVE), 0)

    def test_skip_restores_every_buffer(self):
        model = _BNNet()
        wrapper = GuardedOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
        model.train_step(dict(inputs=torch.randn(4, 3)), wrapper)
        before = _state(model)
        bad = torch.randn(4, 3)
        bad[0, 0] = float('inf')
        model.train_step(dict(inputs=bad), wrapper)
        self.assertEqual(self.hub.get_info(NONFINITE_TOTAL), 1)
        for key, value in model.state_dict().items():
            self.assertTrue(torch.equal(value, before[key]), key)
        self.assertEqual(int(model.bn.num_batches_tracked), 1)
        model.eval()
        self.assertTrue(torch.isfinite(model(torch.randn(2, 3))).all())
        # Without the guard the same batch poisons the statistics.
        model.train()
        model.train_step(dict(inputs=bad), OptimWrapper(wrapper.optimizer))
        self.assertFalse(torch.isfinite(model.bn.running_var).all())

    def test_rebound_buffer_restored(self):
        # A module may rebind a buffer instead of updating it in place.
        model = _BNNet()
        model.register_buffer('seen', torch.zeros(1))
        forward = model.forward

        def counting_forward(*args, **kwargs):
            model.seen = model.seen + 1
            return forward(*args, **kwargs)

        model.forward = counting_forward
        wrapper = GuardedOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
        model.train_step(dict(inputs=torch.full((4, 3), float('nan'))),
                         wrapper)
        self.assertEqual(float(model.seen), 0.0)
        model.train_step(dict(inputs=torch.randn(4, 3)), wrapper)
        self.assertEqual(float(model.seen), 1.0)

    def test_accumulation_window_dropped_on_skip(self):
        model = _BNNet()
        wrapper = GuardedOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            accumulative_counts=2)
        before = _state(model)
        good = dict(inputs=torch.randn(4, 3))
        bad = dict(inputs=torch.full((4, 3), float('nan')))
        model.train_step(good, wrapper)  # accumulates, no step
        model.train_step(bad, wrapper)  # skips the whole window
        self.assertEqual(wrapper.inner_count, 2)
        for key, value in model.state_dict().items():
            self.assertTrue(torch.equal(value, before[key]), key)
        self.assertTrue(all(p.grad is None or not p.grad.any()
                            for p in model.parameters()))
        model.train_step(good, wrapper)
        model.train_step(good, wrapper)  # end of the next window: steps
        self.assertFalse(torch.equal(model.fc.weight, before['fc.weight']))
        self.assertEqual(self.hub.get_info(NONFINITE_CONSECUTIVE), 0)


class TestGuardedMixedPrecision(unittest.TestCase):

    def setUp(self):
        self.hub = MessageHub.get_instance(f'test_guard_mp_{self.id()}')

    def test_bf16_forward_and_guard(self):
        model = _BNNet()
        wrapper = GuardedBF16AutocastOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            max_nonfinite_skips=2)
        self.assertIsInstance(wrapper, BF16AutocastOptimWrapper)
        with wrapper.optim_context(model):
            self.assertEqual(model.fc(torch.randn(2, 3)).dtype, torch.bfloat16)
        before = _state(model)
        bad = torch.randn(4, 3)
        bad[1, 2] = float('nan')
        model.train_step(dict(inputs=bad), wrapper)
        for key, value in model.state_dict().items():
            self.assertTrue(torch.equal(value, before[key]), key)
        model.train_step(dict(inputs=torch.randn(4, 3)), wrapper)
        self.assertFalse(torch.equal(model.fc.weight, before['fc.weight']))
        with self.assertRaises(NonFiniteLossError):
            model.train_step(dict(inputs=bad), wrapper)
            model.train_step(dict(inputs=bad), wrapper)

    def test_amp_composition(self):
        # AmpOptimWrapper refuses to build without a GPU; its loss scaler (disabled
        # on CPU) is enough to check that the guard and AMP compose.
        model = _BNNet()
        with mock.patch('mmengine.optim.optimizer.amp_optimizer_wrapper.'
                        'is_cuda_available', return_value=True), \
                mock.patch('warnings.warn'):
            wrapper = GuardedAmpOptimWrapper(
                optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                loss_scale='dynamic', max_nonfinite_skips=3)
        self.assertIsInstance(wrapper, AmpOptimWrapper)
        self.assertIn('loss_scaler', wrapper.state_dict())
        self.assertFalse(wrapper.check_grads and
                         getattr(wrapper, 'loss_scaler', None) is None)
        before = _state(model)
        model.train_step(dict(inputs=torch.full((4, 3), float('inf'))),
                         wrapper)
        self.assertEqual(self.hub.get_info(NONFINITE_TOTAL), 1)
        for key, value in model.state_dict().items():
            self.assertTrue(torch.equal(value, before[key]), key)
        model.train_step(dict(inputs=torch.randn(4, 3)), wrapper)
        self.assertFalse(torch.equal(model.fc.weight, before['fc.weight']))

    @unittest.skipUnless(torch.cuda.is_available(), 'needs a CUDA device')
    def test_amp_on_gpu(self):
        model = _BNNet().cuda()
        wrapper = GuardedAmpOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            max_nonfinite_skips=3)
        with wrapper.optim_context(model):
            self.assertEqual(model.fc(torch.randn(2, 3).cuda()).dtype,
                             torch.float16)
        before = _state(model)
        model.train_step(dict(inputs=torch.full((4, 3), float('nan')).cuda()),
                         wrapper)
        for key, value in model.state_dict().items():
            self.assertTrue(torch.equal(value, before[key]), key)
        self.assertEqual(self.hub.get_info(NONFINITE_TOTAL), 1)


class TestGuardUnderDDP(unittest.TestCase):
    """mmengine's own DDP wrapper: its train_step goes through the same wrapper."""

    @classmethod
    def setUpClass(cls):
        cls._owns_group = not dist.is_initialized()
        if cls._owns_group:
            os.environ['MASTER_ADDR'] = '127.0.0.1'
            os.environ['MASTER_PORT'] = str(free_port())
            dist.init_process_group('gloo', rank=0, world_size=1)

    @classmethod
    def tearDownClass(cls):
        if cls._owns_group:
            dist.destroy_process_group()

    def _nan_step(self, model):
        data = model.data_preprocessor(batch(n_occ=0), True)
        data['inputs'][0, 0, 0, 0] = float('nan')
        model.data_preprocessor.forward = lambda d, training=False: data

    def test_nonfinite_skip_and_abort_under_ddp(self):
        hub = MessageHub.get_instance('test_guarded_ddp')
        model = build()
        ddp = MMDistributedDataParallel(
            module=model, broadcast_buffers=False,
            find_unused_parameters=True)
        optim = GuardedOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            max_nonfinite_skips=2)
        before = copy.deepcopy(model.state_dict())
        original = model.data_preprocessor.forward
        self._nan_step(model)
        ddp.train_step({}, optim)
        self.assertEqual(hub.get_info(NONFINITE_TOTAL), 1)
        for k, v in model.state_dict().items():
            self.assertTrue(torch.equal(v, before[k]), k)
        with self.assertRaises(NonFiniteLossError):
            ddp.train_step({}, optim)
        for k, v in model.state_dict().items():
            self.assertTrue(torch.equal(v, before[k]), k)
        model.data_preprocessor.forward = original
        ddp.train_step(batch(), optim)
        self.assertFalse(torch.equal(model.head.kernel, before['head.kernel']))

    def test_plain_mmengine_wrapper_would_not_guard(self):
        # Guards the test above: mmengine's OptimWrapper steps on NaN.
        MessageHub.get_instance('test_plain_ddp')
        model = build()
        ddp = MMDistributedDataParallel(
            module=model, broadcast_buffers=False,
            find_unused_parameters=True)
        optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
        self._nan_step(model)
        ddp.train_step({}, optim)
        self.assertFalse(torch.isfinite(model.head.kernel).all())
