"""fp16 numerics of OAML, proven on CPU (GPU training runs fp16 AMP; no GPU in CI).

CPU autocast supports float16 and ``torch.amp.GradScaler('cpu')`` is the dynamic loss
scaler CUDA uses, so the fp16 arithmetic of a GPU training step can be checked here:

* an OAML training step under fp16 autocast with dynamic loss scaling stays finite and
  its losses / gradients match fp32 (tolerances below, measured values beside them);
* the margin heads and QAConv matching in fp16 (128 x 128 probe / gallery blocks, as
  QAConv's evaluator chunks them) match fp32;
* an overflowing step is skipped by the scaler and is *not* counted as a non-finite
  (corrupt) update; a non-finite loss still is.

mmengine's ``AmpOptimWrapper`` refuses to build without a GPU, so
:class:`CPUAmpOptimWrapper` below keeps its ``backward`` / ``step`` / ``state_dict``
(the code a GPU run executes) and only builds the scaler and the autocast context for
the CPU.
"""
import copy
import unittest
from contextlib import contextmanager
from unittest import mock

import torch
import torch.nn.functional as F
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper

from oaml_mm.engine.optimizers import GuardedAmpOptimWrapper
from oaml_mm.engine.optimizers.guarded_optim_wrapper import NONFINITE_TOTAL
from oaml_mm.errors import NonFiniteLossError
from oaml_mm.registry import MODELS
from .test_oaml_recognizer import batch, build

BRANCHES = ('backbone', 'neck', 'head', 'qaconv_head')


class CPUAmpOptimWrapper(GuardedAmpOptimWrapper):
    """The shipped ``GuardedAmpOptimWrapper`` with a CPU ``GradScaler`` and CPU
    fp16 autocast: the guard's ``update_params`` and the AMP ``backward`` /
    ``step`` / ``state_dict`` are inherited unchanged."""

    def __init__(self, init_scale: float = 2.0**16, max_nonfinite_skips: int = 5,
                 **kwargs) -> None:
        # AmpOptimWrapper.__init__ asserts a GPU: build the guard over a plain
        # OptimWrapper, then the CPU scaler.
        OptimWrapper.__init__(self, **kwargs)
        self.max_nonfinite_skips = max_nonfinite_skips
        self.check_grads = True
        self.restore_buffers = True
        self._snapshot = None
        self._scale_update_param = None
        self.loss_scaler = torch.amp.GradScaler('cpu', init_scale=init_scale)
        self.cast_dtype = torch.float16

    @contextmanager
    def optim_context(self, model):
        self.snapshot_buffers(model)
        with OptimWrapper.optim_context(self, model), torch.autocast(
                'cpu', dtype=torch.float16):
            yield


def _skips() -> int:
    return int(MessageHub.get_current_instance().get_info(NONFINITE_TOTAL, 0))


def _total(losses):
    return sum(v for k, v in losses.items() if 'loss' in k)


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()
            if p.grad is not None}


def _branch_errors(ref, got):
    """Relative L2 error of each branch's concatenated gradient."""
    out = {}
    for branch in BRANCHES:
        names = [n for n in ref if n.startswith(branch + '.')]
        a = torch.cat([ref[n].flatten() for n in names])
        b = torch.cat([got[n].flatten() for n in names])
        out[branch] = float((a - b).norm() / a.norm())
    return out


class TestFP16TrainStep(unittest.TestCase):

    def setUp(self):
        MessageHub.get_instance(f'test_fp16_{self._testMethodName}')

    def test_loss_and_gradients_match_fp32(self):
        data = build().data_preprocessor(batch(), True)
        ref = build().train()
        ref_losses = ref(**data, mode='loss')
        _total(ref_losses).backward()
        ref_grads = _grads(ref)

        model = build().train()
        optim = torch.optim.SGD(model.parameters(), lr=0.1)
        # The dynamic scaler's default start (2**16) overflows this model's first
        # layer; 2**10 is where it settles, so this step is not skipped.
        scaler = torch.amp.GradScaler('cpu', init_scale=2.0**10)
        with torch.autocast('cpu', dtype=torch.float16):
            losses = model(**data, mode='loss')
            # autocast really ran in fp16 (the backbone's maps come out half).
            maps = model.backbone(data['inputs'][:2])[0]
        self.assertEqual(maps.dtype, torch.float16)
        scaler.scale(_total(losses)).backward()
        scaler.unscale_(optim)
        grads = _grads(model)
        self.assertEqual(sorted(grads), sorted(ref_grads))
        for name, g in grads.items():
            self.assertTrue(bool(torch.isfinite(g).all()), name)
        # Losses: measured relative differences <= 8e-4.
        for key in ('loss_adaface', 'loss_qaconv', 'loss_occlusion'):
            torch.testing.assert_close(losses[key].float(), ref_losses[key],
                                       rtol=5e-3, atol=0, msg=key)
        # Gradients, per branch: measured 0.002 (heads) .. 0.06 (occlusion
        # head, fed by fp16 maps); bf16 autocast gives 0.02 .. 0.09.
        for branch, err in _branch_errors(ref_grads, grads).items():
            self.assertLess(err, 0.15, branch)
        for branch in ('backbone', 'head', 'qaconv_head'):
            self.assertLess(_branch_errors(ref_grads, grads)[branch], 0.05)

    def test_amp_train_step_matches_fp32_update(self):
        model, ref = build(), build()
        before = copy.deepcopy(ref.state_dict())
        ref.train_step(batch(), OptimWrapper(
            torch.optim.SGD(ref.parameters(), lr=0.05)))
        optim = CPUAmpOptimWrapper(
            init_scale=2.0**10,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.05))
        skips = _skips()
        log = model.train_step(batch(), optim)
        self.assertTrue(bool(torch.isfinite(log['loss'])))
        self.assertEqual(_skips(), skips)
        self.assertEqual(optim.loss_scaler.get_scale(), 2.0**10)  # not skipped
        # Parameter updates (after - before) agree with fp32's per branch.
        ref_delta = {n: p.detach() - before[n]
                     for n, p in ref.named_parameters()}
        delta = {n: p.detach() - before[n] for n, p in model.named_parameters()}
        for branch, err in _branch_errors(ref_delta, delta).items():
            self.assertLess(err, 0.15, branch)

    def test_overflow_is_skipped_by_scaler_not_counted_as_nonfinite(self):
        model = build()
        # 2**40 times the loss overflows fp16 gradients: the scaler must skip.
        optim = CPUAmpOptimWrapper(
            init_scale=2.0**40, max_nonfinite_skips=2,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1,
                                      momentum=0.9))
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        skips = _skips()
        # More overflows in a row than max_nonfinite_skips: still no abort.
        for step in range(3):
            log = model.train_step(batch(), optim)
            self.assertTrue(bool(torch.isfinite(log['loss'])))
            self.assertEqual(_skips(), skips)
            self.assertEqual(optim.loss_scaler.get_scale(), 2.0**(39 - step))
            for n, p in model.named_parameters():
                self.assertTrue(torch.equal(p, params[n]), n)
            self.assertEqual(optim.optimizer.state_dict()['state'], {})
        self.assertEqual(_skips(), skips)
        # Once the scale is low enough the step goes through.
        optim.loss_scaler.update(2.0**10)
        log = model.train_step(batch(), optim)
        self.assertEqual(optim.loss_scaler.get_scale(), 2.0**10)
        self.assertFalse(torch.equal(model.head.kernel, params['head.kernel']))

    def test_nonfinite_loss_under_amp_is_still_counted(self):
        model = build()
        optim = CPUAmpOptimWrapper(
            init_scale=2.0**10, max_nonfinite_skips=2,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
        data = model.data_preprocessor(batch(n_occ=0), True)
        data['inputs'][0, 0, 0, 0] = float('nan')
        model.data_preprocessor.forward = lambda d, training=False: data
        skips = _skips()
        MessageHub.get_current_instance().update_info(
            'nonfinite/consecutive', 0)
        model.train_step({}, optim)
        self.assertEqual(_skips(), skips + 1)
        self.assertEqual(optim.loss_scaler.get_scale(), 2.0**10)
        with self.assertRaises(NonFiniteLossError):
            model.train_step({}, optim)

    def test_scaler_state_is_checkpointed(self):
        model = build()
        optim = CPUAmpOptimWrapper(
            init_scale=2.0**40,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
        model.train_step(batch(), optim)
        state = optim.state_dict()
        self.assertEqual(state['loss_scaler']['scale'], 2.0**39)
        other = CPUAmpOptimWrapper(
            optimizer=torch.optim.SGD(build().parameters(), lr=0.1))
        other.load_state_dict(state)
        self.assertEqual(other.loss_scaler.get_scale(), 2.0**39)


class TestFP16MarginHeads(unittest.TestCase):

    def test_heads_match_fp32(self):
        g = torch.Generator().manual_seed(0)
        emb = torch.randn(32, 64, generator=g)
        labels = torch.arange(32) % 10
        for kind in ('ArcFaceHead', 'CosFaceHead', 'AdaFaceHead'):
            heads = []
            for _ in range(2):  # same weights; AdaFace's norm EMA moves per call
                torch.manual_seed(0)
                heads.append(MODELS.build(dict(type=kind, in_channels=64,
                                               num_classes=10)).train())
            # Under AMP the backbone hands the head fp16 embeddings and norms.
            e16 = emb.half().requires_grad_()
            e32 = emb.clone().requires_grad_()
            norms = emb.norm(dim=1, keepdim=True)
            with torch.autocast('cpu', dtype=torch.float16):
                logits16 = heads[0](F.normalize(e16, dim=1), norms.half(),
                                    labels)
                loss16 = heads[0].loss(e16, norms.half(), labels)['loss']
            logits32 = heads[1](F.normalize(e32, dim=1), norms, labels)
            loss32 = heads[1].loss(e32, norms, labels)['loss']
            self.assertEqual(logits16.dtype, torch.float32)
            # Logits are scaled by s = 64: fp16 embeddings (2**-11 relative)
            # move them by ~64 * 2**-11 / 4; measured 0.008.
            torch.testing.assert_close(logits16, logits32, atol=0.04, rtol=0,
                                       msg=kind)
            # Measured relative differences: loss 5e-6, gradient 3e-4.
            torch.testing.assert_close(loss16, loss32, rtol=1e-4, atol=0,
                                       msg=kind)
            loss16.backward()
            loss32.backward()
            self.assertTrue(bool(torch.isfinite(e16.grad).all()), kind)
            err = (e16.grad.float() - e32.grad).norm() / e32.grad.norm()
            self.assertLess(float(err), 5e-3, kind)


class TestFP16QAConv(unittest.TestCase):

    def test_match_in_fp16_blocks_matches_fp32(self):
        # The GPU path: half_test correlates in fp16 on CUDA (bf16 on CPU); pin the
        # CUDA dtype to run the same code with CPU fp16 kernels. One 128 x 128
        # probe / gallery block, as QAConv's evaluator chunks its test set.
        g = torch.Generator().manual_seed(0)
        n, c = 128, 128
        probe = torch.randn(n, c, 7, 7, generator=g)
        gallery = torch.randn(n, c, 7, 7, generator=g)
        gallery[:64] = probe[:64] + 0.8 * torch.randn(64, c, 7, 7, generator=g)
        vis_p, vis_g = torch.rand(n, 1, 7, 7, generator=g), None
        genuine = torch.zeros(n, n, dtype=torch.bool)
        genuine[:64, :64] = torch.eye(64, dtype=torch.bool)
        head = MODELS.build(dict(type='QAConvHead', in_channels=c)).eval()
        head.bn.running_mean.fill_(0.4)
        head.bn.running_var.fill_(0.01)
        with torch.no_grad():
            for vis in ((None, None), (vis_p, vis_g)):
                head.half_test = False
                full = head.match(probe, gallery, *vis)
                head.half_test = True
                with mock.patch(
                        'oaml_mm.models.functional.qaconv._half_dtype',
                        return_value=torch.float16) as half_dtype:
                    half = head.match(probe, gallery, *vis)
                    # fp16 maps as the model hands them out (half_maps=True).
                    half_maps = head.match(probe.half(), gallery.half(), *vis)
                self.assertTrue(half_dtype.called)
                bf16 = head.match(probe, gallery, *vis)
                self.assertEqual(half.dtype, torch.float32)
                gap = float(full[genuine].mean() - full[~genuine].mean())
                err = float((half - full).abs().max())
                self.assertGreater(err, 0)  # fp16 really ran
                # Measured: 1e-4 of the genuine-impostor gap, 5x below bf16's
                # error (fp16 keeps 3 more mantissa bits); fp16 input maps 1.6e-4.
                self.assertLess(err, 5e-4 * gap)
                self.assertLess(err, float((bf16 - full).abs().max()))
                self.assertLess(float((half_maps - full).abs().max()),
                                1e-3 * gap)

    def test_training_loss_in_fp16_matches_fp32(self):
        g = torch.Generator().manual_seed(1)
        maps = torch.randn(16, 64, 7, 7, generator=g)
        labels = torch.arange(16) // 2
        vis = torch.rand(16, 1, 7, 7, generator=g)
        torch.manual_seed(0)
        head = MODELS.build(dict(type='QAConvHead', in_channels=64)).train()
        m32 = maps.clone().requires_grad_()
        m16 = maps.half().requires_grad_()
        ref = head.loss(m32, labels, vis)
        with torch.autocast('cpu', dtype=torch.float16):
            out = head.loss(m16, labels, vis)
        for key, value in ref.items():
            if 'loss' in key:
                torch.testing.assert_close(out[key].float(), value,
                                           rtol=5e-3, atol=1e-4, msg=key)
        _total(ref).backward()
        _total(out).backward()
        # Measured 0.012 (the gradient of the maps, through the hardest-pair max).
        err = (m16.grad.float() - m32.grad).norm() / m32.grad.norm()
        self.assertLess(float(err), 0.04)


if __name__ == '__main__':
    unittest.main()
