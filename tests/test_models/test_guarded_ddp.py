"""GuardedDistributedDataParallel: the non-finite guard also holds under DDP."""
import copy
import os
import socket
import unittest

import torch
import torch.distributed as dist
from mmengine.logging import MessageHub
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import OptimWrapper

from oaml_mm.errors import NonFiniteLossError
from oaml_mm.models.wrappers import GuardedDistributedDataParallel
from tests.test_models.test_oaml_recognizer import batch, build


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class TestGuardedDistributedDataParallel(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls._owns_group = not dist.is_initialized()
        if cls._owns_group:
            os.environ['MASTER_ADDR'] = '127.0.0.1'
            os.environ['MASTER_PORT'] = str(_free_port())
            dist.init_process_group('gloo', rank=0, world_size=1)

    @classmethod
    def tearDownClass(cls):
        if cls._owns_group:
            dist.destroy_process_group()

    def test_nonfinite_skip_and_abort_under_ddp(self):
        MessageHub.get_instance('test_guarded_ddp')
        model = build(train_cfg=dict(max_nonfinite_skips=2))
        ddp = GuardedDistributedDataParallel(
            module=model, broadcast_buffers=False,
            find_unused_parameters=True)
        optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
        before = copy.deepcopy(model.state_dict())
        data = model.data_preprocessor(batch(n_occ=0), True)
        data['inputs'][0, 0, 0, 0] = float('nan')
        original = model.data_preprocessor.forward
        model.data_preprocessor.forward = lambda d, training=False: data
        log = ddp.train_step({}, optim)
        self.assertEqual(float(log['nonfinite_skips']), 1.0)
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.assertTrue(torch.equal(v, before[k]), k)
        with self.assertRaises(NonFiniteLossError):
            ddp.train_step({}, optim)
        model.data_preprocessor.forward = original
        ddp.train_step(batch(), optim)
        self.assertFalse(torch.equal(model.head.kernel, before['head.kernel']))

    def test_plain_mmengine_wrapper_would_not_guard(self):
        # Guards the test above: mmengine's wrapper steps on NaN.
        MessageHub.get_instance('test_plain_ddp')
        model = build(train_cfg=dict(max_nonfinite_skips=2))
        ddp = MMDistributedDataParallel(
            module=model, broadcast_buffers=False,
            find_unused_parameters=True)
        optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
        data = model.data_preprocessor(batch(n_occ=0), True)
        data['inputs'][0, 0, 0, 0] = float('nan')
        model.data_preprocessor.forward = lambda d, training=False: data
        ddp.train_step({}, optim)
        self.assertFalse(torch.isfinite(model.head.kernel).all())
