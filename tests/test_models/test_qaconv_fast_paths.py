"""Tests of QAConv matching's fast paths: layout, fused seed weighting, bf16, budget."""
import unittest

import torch
import torch.nn as nn

from oaml_mm.models.functional import (normalize_maps, qaconv_match,
                                       qaconv_match_pairs)


def _modules(train=False):
    torch.manual_seed(0)  # the same FC on every call
    bn, fc, lbn = nn.BatchNorm1d(1), nn.Linear(49, 1), nn.BatchNorm1d(1)
    with torch.no_grad():
        fc.weight.normal_(1 / 49, 0.01)
    bn.running_mean.fill_(0.4)
    bn.running_var.fill_(0.01)
    lbn.running_mean.fill_(0.8)
    lbn.running_var.fill_(0.05)
    for m in (bn, fc, lbn):
        m.train(train)
    return bn, fc, lbn


def _maps(n, c, seed):
    g = torch.Generator().manual_seed(seed)
    return normalize_maps(torch.randn(n, c, 7, 7, generator=g))


def _naive(p, g, bn, fc, lbn, vp=None, vg=None, mode='seed'):
    """Full P x G x hw x hw tensor, visibility applied to the correlation."""
    s = torch.einsum('pcr,gct->pgrt', p.flatten(2), g.flatten(2))
    P, G = s.shape[:2]
    if mode == 'seed' and vp is not None:
        s = s * vp.reshape(P, 1, 49, 1) * vg.reshape(1, G, 1, 49)
    x = torch.stack((s.amax(3), s.amax(2)), dim=2)
    x = fc(bn(x.reshape(-1, 1, 49)).reshape(P, G, 2, 49)).sum((-2, -1))
    return lbn(x.reshape(-1, 1)).reshape(P, G)


class TestQAConvFastPaths(unittest.TestCase):

    def test_fused_seed_weighting_equals_weighted_correlation(self):
        p, g = _maps(5, 16, 0), _maps(70, 16, 1)  # > one 64-wide gallery chunk
        vp, vg = torch.rand(5, 1, 7, 7), torch.rand(70, 1, 7, 7)
        for train in (False, True):
            ref = _naive(p, g, *_modules(train), vp, vg)
            out = qaconv_match(p, g, *_modules(train), vp, vg)
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)

    def test_seed_weighting_gradient_reaches_maps(self):
        p = _maps(4, 8, 0).requires_grad_()
        g = _maps(3, 8, 1).requires_grad_()
        vp, vg = torch.rand(4, 1, 7, 7), torch.rand(3, 1, 7, 7)
        ref_p, ref_g = p.detach().clone().requires_grad_(), \
            g.detach().clone().requires_grad_()
        qaconv_match(p, g, *_modules(True), vp, vg).square().sum().backward()
        _naive(ref_p, ref_g, *_modules(True), vp, vg).square().sum().backward()
        torch.testing.assert_close(p.grad, ref_p.grad, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(g.grad, ref_g.grad, atol=1e-5, rtol=1e-4)

    def test_bf16_scores_agree_with_fp32_at_512_channels(self):
        # The reduced-precision path (QAConvHead(half_test=True) on CPU) at the
        # real width. CPU matmul returns bf16, so each correlation is rounded to 8
        # bits (about 2e-3): scores move by < 2% of the genuine-impostor gap (about
        # 15% of the impostor spread, docs/benchmarks.md); the best match is kept.
        p, g = _maps(24, 512, 0), _maps(40, 512, 1)
        g[:24] = normalize_maps(p + 0.8 * _maps(24, 512, 2))  # true matches
        genuine = torch.zeros(24, 40, dtype=torch.bool)
        genuine[:, :24] = torch.eye(24, dtype=torch.bool)
        vp, vg = torch.rand(24, 1, 7, 7), torch.rand(40, 1, 7, 7)
        with torch.no_grad():
            for mode in ('seed', 'gate', 'none'):
                for vis in ((None, None), (vp, vg)):
                    full = qaconv_match(p, g, *_modules(), *vis, vis_mode=mode)
                    half = qaconv_match(p, g, *_modules(), *vis, vis_mode=mode,
                                        half=True)
                    self.assertEqual(half.dtype, torch.float32)
                    gap = full[genuine].mean() - full[~genuine].mean()
                    err = (half - full).abs().max()
                    self.assertGreater(float(err), 0)  # bf16 really ran
                    self.assertLess(float(err), 0.02 * float(gap), mode)
                    self.assertTrue(torch.equal(half.argmax(1),
                                                full.argmax(1)))
                    pairs = qaconv_match_pairs(
                        p, g[:24], *_modules(),
                        *(None if v is None else v[:24] for v in vis),
                        vis_mode=mode, half=True)
                    torch.testing.assert_close(pairs, half[:, :24].diagonal(),
                                               atol=1e-4, rtol=1e-4)

    def test_largest_intermediate_respects_budget(self):
        budget = 5 * 49 * 49
        seen = []
        spied = {name: getattr(torch, name) for name in ('mm', 'bmm', 'addcmul')}

        def spy(fn):
            def wrapped(*args, **kw):
                out = fn(*args, **kw)
                seen.append(out.numel())
                return out
            return wrapped

        for name, fn in spied.items():
            setattr(torch, name, spy(fn))
        try:
            p, g = _maps(13, 8, 0), _maps(11, 8, 1)
            vp, vg = torch.rand(13, 1, 7, 7), torch.rand(11, 1, 7, 7)
            for mode in ('seed', 'gate', 'none'):
                for train in (False, True):
                    qaconv_match(p, g, *_modules(train), vp, vg, mode,
                                 max_chunk_elems=budget)
                    qaconv_match_pairs(p, p, *_modules(train), vp, vp, mode,
                                       max_chunk_elems=budget)
        finally:
            for name, fn in spied.items():
                setattr(torch, name, fn)
        self.assertGreater(len(seen), 10)
        self.assertLessEqual(max(seen), budget)
        # A budget below one pair still computes one pair at a time.
        out = qaconv_match(p, g, *_modules(), max_chunk_elems=1)
        torch.testing.assert_close(out, qaconv_match(p, g, *_modules()))

    def test_input_maps_are_not_modified(self):
        p, g = _maps(3, 8, 0), _maps(4, 8, 1)
        vp, vg = torch.rand(3, 1, 7, 7), torch.rand(4, 1, 7, 7)
        p0, g0 = p.clone(), g.clone()
        for half in (False, True):
            qaconv_match(p, g, *_modules(), vp, vg, 'seed', half=half)
            qaconv_match_pairs(p, p, *_modules(), vp, vp, 'gate', half=half)
        self.assertTrue(torch.equal(p, p0) and torch.equal(g, g0))


if __name__ == '__main__':
    unittest.main()
