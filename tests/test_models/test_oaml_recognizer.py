"""Tests of FaceDataPreprocessor and OAMLRecognizer (tiny widths, CPU)."""
import copy
import os.path as osp
import unittest

import numpy as np
import torch
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper
from mmpretrain.structures import DataSample

from oaml_mm.errors import ConfigError, DataFormatError, NonFiniteLossError
from oaml_mm.models.functional import calibrate_visibility
from oaml_mm.registry import MODELS
from oaml_mm.utils import load_config
from tests.toy_components import tiny_oaml

TINY = tiny_oaml()


def build(**overrides):
    torch.manual_seed(0)
    cfg = copy.deepcopy(TINY)
    cfg.update(overrides)
    return MODELS.build(cfg)


def batch(n=8, n_occ=4, size=112, seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8,
                          generator=g) for _ in range(n)]
    samples = [DataSample().set_gt_label(i // 2) for i in range(n)]
    occ = []
    for i in range(n_occ):
        s = DataSample()
        vis = torch.ones(1, 7, 7)
        vis[:, 4:] = 0.0 if i % 2 == 0 else 1.0
        s.set_field(vis, 'gt_visibility')
        occ.append(s)
    data = dict(inputs=imgs, data_samples=samples)
    if n_occ:
        data['occlusion'] = dict(inputs=imgs[:n_occ], data_samples=occ)
    return data


def grads_of(module):
    return [p.grad for p in module.parameters()
            if p.grad is not None and bool(p.grad.abs().sum() > 0)]


class TestFaceDataPreprocessor(unittest.TestCase):

    def test_channel_order_and_normalisation(self):
        img = torch.zeros(3, 4, 4, dtype=torch.uint8)
        img[0] = 255  # pure red in RGB
        bgr = MODELS.build(dict(type='FaceDataPreprocessor',
                                channel_order='bgr'))
        rgb = MODELS.build(dict(type='FaceDataPreprocessor',
                                channel_order='rgb'))
        out = bgr(dict(inputs=[img], data_samples=None))
        self.assertEqual(out['inputs'][0, :, 0, 0].tolist(), [-1., -1., 1.])
        self.assertIsNone(out['occlusion'])
        out = rgb(dict(inputs=[img, img], data_samples=None,
                       occlusion=dict(inputs=[img], data_samples=None)))
        self.assertEqual(out['inputs'][1, :, 0, 0].tolist(), [1., -1., -1.])
        self.assertEqual(tuple(out['occlusion']['inputs'].shape), (1, 3, 4, 4))
        with self.assertRaises(DataFormatError):
            rgb(dict(inputs=[img, torch.zeros(3, 5, 5, dtype=torch.uint8)]))
        with self.assertRaises(ConfigError):
            MODELS.build(dict(type='FaceDataPreprocessor', channel_order='x'))


class TestOAMLRecognizer(unittest.TestCase):

    def test_loss_keys(self):
        model = build()
        data = model.data_preprocessor(batch(), True)
        losses = model(**data, mode='loss')
        for key in ('loss_adaface', 'loss_qaconv', 'loss_occlusion',
                    'acc_adaface', 'acc_qaconv_pairwise', 'qaconv_pairwise'):
            self.assertIn(key, losses)
        # Only weighted losses carry 'loss' in their key (mmengine sums those).
        summed = [k for k in losses if 'loss' in k]
        self.assertEqual(sorted(summed),
                         ['loss_adaface', 'loss_occlusion', 'loss_qaconv'])

    def test_loss_keys_name_the_margin_head(self):
        # docs/models.md, "Swapping the margin head": an ArcFace head logs
        # loss_arcface / acc_arcface, and nothing says adaface.
        model = build(head=dict(type='ArcFaceHead', in_channels=16,
                                num_classes=4))
        data = model.data_preprocessor(batch(), True)
        losses = model(**data, mode='loss')
        self.assertIn('loss_arcface', losses)
        self.assertIn('acc_arcface', losses)
        self.assertFalse([k for k in losses if 'adaface' in k])
        summed = [k for k in losses if 'loss' in k]
        self.assertEqual(sorted(summed),
                         ['loss_arcface', 'loss_occlusion', 'loss_qaconv'])

    def test_gradient_isolation(self):
        model = build()
        data = model.data_preprocessor(batch(), True)
        for key, receives, untouched in (
                ('loss_adaface', ['backbone', 'head'], ['neck', 'qaconv_head']),
                ('loss_qaconv', ['backbone', 'qaconv_head'], ['neck', 'head']),
                ('loss_occlusion', ['neck'],
                 ['backbone', 'head', 'qaconv_head'])):
            model.zero_grad(set_to_none=True)
            model(**data, mode='loss')[key].backward()
            for name in receives:
                self.assertTrue(grads_of(getattr(model, name)),
                                f'{key} should reach {name}')
            for name in untouched:
                self.assertFalse(grads_of(getattr(model, name)),
                                 f'{key} must not reach {name}')

    def test_few_steps_lower_all_three_losses(self):
        model = build(loss_weights=dict(occlusion=1.0))
        optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.02,
                                             momentum=0.9))
        data = batch()
        model.train()
        history = [model.train_step(copy.deepcopy(data), optim)
                   for _ in range(12)]
        for key in ('loss_adaface', 'loss_qaconv', 'loss_occlusion'):
            first = sum(h[key].item() for h in history[:2]) / 2
            last = sum(h[key].item() for h in history[-2:]) / 2
            self.assertLess(last, first, key)

    def test_nonfinite_update_is_skipped_then_stops(self):
        # The recognizer trains through mmengine's train_step; the guard is the
        # optimizer wrapper every shipped config uses.
        from oaml_mm.engine import NONFINITE_TOTAL, GuardedOptimWrapper
        hub = MessageHub.get_instance('test_nonfinite_skip')  # fresh counters
        model = build()
        optim = GuardedOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            max_nonfinite_skips=2)
        before = copy.deepcopy(model.state_dict())
        data = model.data_preprocessor(batch(n_occ=0), True)
        data['inputs'][0, 0, 0, 0] = float('nan')
        original = model.data_preprocessor.forward
        model.data_preprocessor.forward = lambda d, training=False: data
        log = model.train_step({}, optim)
        self.assertEqual(hub.get_info(NONFINITE_TOTAL), 1)
        self.assertFalse(torch.isfinite(log['loss']))  # reported, not zeroed
        # Weights and every buffer (BN statistics and counts, AdaFace EMA) are
        # untouched.
        for k, v in model.state_dict().items():
            self.assertTrue(torch.equal(v, before[k]), k)
        with self.assertRaises(NonFiniteLossError):
            model.train_step({}, optim)
        for k, v in model.state_dict().items():
            self.assertTrue(torch.equal(v, before[k]), k)
        # A finite step trains and keeps the total.
        model.data_preprocessor.forward = original
        model.train_step(batch(), optim)
        self.assertEqual(hub.get_info(NONFINITE_TOTAL), 2)
        self.assertFalse(torch.equal(model.head.kernel, before['head.kernel']))

    def test_guard_setting_moved_to_the_optimizer_wrapper(self):
        with self.assertRaisesRegex(ConfigError,
                                    'optim_wrapper.*max_nonfinite_skips'):
            build(train_cfg=dict(max_nonfinite_skips=2))

    def test_predict_and_flip(self):
        model = build(test_cfg=dict(flip_test=True, return_feature_maps=True,
                                    half_maps=True)).eval()
        data = model.data_preprocessor(batch(n=2, n_occ=0), False)
        out = model(data['inputs'], data['data_samples'], mode='predict')
        with torch.no_grad():
            _, e1, n1 = model.backbone(data['inputs'])
            _, e2, n2 = model.backbone(data['inputs'].flip(3))
        raw = e1 * n1 + e2 * n2
        s = out[0]
        torch.testing.assert_close(s.embedding, raw[0] / raw[0].norm())
        torch.testing.assert_close(s.norm, raw[0].norm().reshape(1))
        self.assertEqual(tuple(s.visibility.shape), (1, 7, 7))
        self.assertEqual(s.feature_map.dtype, torch.float16)
        self.assertEqual(tuple(s.feature_map.shape), (64, 7, 7))
        self.assertEqual(int(s.gt_label), 0)  # input metainfo kept
        self.assertFalse(s.embedding.requires_grad)
        maps = torch.stack([o.feature_map.float() for o in out])
        self.assertEqual(tuple(model.match(maps, maps).shape), (2, 2))

    def test_baseline_without_qaconv(self):
        model = build(neck=None, qaconv_head=None,
                      loss_weights=dict(adaface=1.0))
        data = model.data_preprocessor(batch(), True)
        losses = model(**data, mode='loss')
        self.assertEqual(sorted(k for k in losses if 'loss' in k),
                         ['loss_adaface'])
        model.eval()
        with torch.no_grad():
            feats = model.extract(data['inputs'])
        self.assertTrue(torch.equal(feats['visibility'],
                                    torch.ones(8, 1, 7, 7)))
        with self.assertRaises(ConfigError):
            model.match(torch.randn(1, 64, 7, 7), torch.randn(1, 64, 7, 7))

    def test_qaconv_train_vis_gt(self):
        model = build(train_cfg=dict(qaconv_train_vis='gt'))
        seen = {}
        loss = model.qaconv_head.loss

        def spy(maps, labels, vis=None):
            seen['vis'] = vis
            return loss(maps, labels, vis)

        model.qaconv_head.loss = spy
        data = batch()
        for s in data['data_samples']:
            s.set_field(torch.zeros(1, 7, 7), 'gt_visibility')
        model(**model.data_preprocessor(data, True), mode='loss')
        self.assertTrue(torch.equal(seen['vis'], torch.zeros(8, 1, 7, 7)))

    def test_stage3_maps(self):
        # QAConv and the occlusion head on the 14x14 maps of stage 3.
        model = build(
            backbone=dict(TINY['backbone'], map_stage=3),
            neck=dict(type='OcclusionHead', in_channels=32, hidden_channels=8),
            qaconv_head=dict(type='QAConvHead', in_channels=32, feat_size=14),
            train_cfg=dict(qaconv_train_vis='gt', occ_on_main=True))
        seen = {}
        loss = model.qaconv_head.loss

        def spy(maps, labels, vis=None):
            seen['maps'], seen['vis'] = maps.shape, vis
            return loss(maps, labels, vis)

        model.qaconv_head.loss = spy
        data = batch()
        for s in data['data_samples']:
            s.set_field(torch.ones(1, 112, 112), 'gt_visibility')
        losses = model(**model.data_preprocessor(data, True), mode='loss')
        self.assertEqual(tuple(seen['maps']), (8, 32, 14, 14))
        self.assertEqual(tuple(seen['vis'].shape), (8, 1, 14, 14))
        self.assertTrue(torch.isfinite(losses['loss_occlusion']))
        model.eval()
        feats = model.extract(model.data_preprocessor(batch(2, 0), False)
                              ['inputs'], return_feature_maps=True)
        self.assertEqual(tuple(feats['feature_map'].shape), (2, 32, 14, 14))
        self.assertEqual(tuple(feats['visibility'].shape), (2, 1, 14, 14))
        # Without feat_size the head takes the maps' side; a stated one that
        # differs is refused.
        model = build(backbone=dict(TINY['backbone'], map_stage=3), neck=None,
                      qaconv_head=dict(type='QAConvHead', in_channels=32))
        self.assertEqual(model.qaconv_head.feat_size, 14)
        with self.assertRaisesRegex(ConfigError, 'map_stage'):
            build(backbone=dict(TINY['backbone'], map_stage=3),
                  neck=None,
                  qaconv_head=dict(type='QAConvHead', in_channels=32,
                                   feat_size=7))

    def _spy_embed(self, model):
        seen = {}
        embed = model.backbone.embed

        def spy(last, weight=None):
            # The last call embeds the main batch (the occlusion stream's
            # forward embeds unweighted before it).
            seen.setdefault('weights', []).append(weight)
            return embed(last, weight)

        model.backbone.embed = spy
        return seen

    def test_global_vis_gt_uses_true_masks(self):
        for mode in ('gt', 'gt_or_pred'):
            model = build(train_cfg=dict(global_vis=mode),
                          test_cfg=dict(global_vis=True))
            seen = self._spy_embed(model)
            data = batch()
            masks = torch.rand(8, 1, 7, 7)
            for s, m in zip(data['data_samples'], masks):
                s.set_field(m, 'gt_visibility')
            model(**model.data_preprocessor(data, True), mode='loss')
            with self.subTest(mode=mode):
                self.assertTrue(torch.equal(seen['weights'][-1], masks))
        # 'gt' with no masks in the batch: every face fully visible.
        model = build(train_cfg=dict(global_vis='gt'),
                      test_cfg=dict(global_vis=True))
        seen = self._spy_embed(model)
        model(**model.data_preprocessor(batch(), True), mode='loss')
        self.assertIsNone(seen['weights'][-1])

    def test_global_vis_pred_uses_the_detached_prediction(self):
        for mode, vis_range in (('pred', None), ('pred', (0.3, 0.7)),
                                ('gt_or_pred', None)):
            model = build(train_cfg=dict(global_vis=mode),
                          test_cfg=dict(global_vis=True,
                                        global_vis_range=vis_range))
            seen = self._spy_embed(model)
            neck_loss = model.neck.loss

            def spy(batches, targets):
                preds, out = neck_loss(batches, targets)
                seen['pred'] = preds[0]
                return preds, out

            model.neck.loss = spy
            model(**model.data_preprocessor(batch(), True), mode='loss')
            expected = seen['pred'].detach()
            if vis_range is not None:
                expected = ((expected - 0.3) / 0.4).clamp(0, 1)
            w = seen['weights'][-1]
            with self.subTest(mode=mode, vis_range=vis_range):
                self.assertFalse(w.requires_grad)
                torch.testing.assert_close(w, expected, atol=0, rtol=0)

    def test_global_vis_gradient_isolation(self):
        # The weighted embedding trains backbone and margin head only: the
        # occlusion head's prediction enters it detached.
        for mode in ('pred', 'gt'):
            model = build(train_cfg=dict(global_vis=mode, occ_on_main=True),
                          test_cfg=dict(global_vis=True))
            data = batch()
            for s in data['data_samples']:
                s.set_field(torch.rand(1, 7, 7), 'gt_visibility')
            losses = model(**model.data_preprocessor(data, True), mode='loss')
            losses['loss_adaface'].backward()
            with self.subTest(mode=mode):
                self.assertTrue(grads_of(model.backbone))
                self.assertTrue(grads_of(model.head))
                self.assertFalse(grads_of(model.neck))
                self.assertFalse(grads_of(model.qaconv_head))

    def test_global_vis_extract_weights_each_view(self):
        model = build(test_cfg=dict(global_vis=True, flip_test=True,
                                    global_vis_range=(0.3, 0.7))).eval()
        plain = build(test_cfg=dict(flip_test=True)).eval()
        x = model.data_preprocessor(batch(n=2, n_occ=0), False)['inputs']
        with torch.no_grad():
            out = model.extract(x)
            ref = plain.extract(x)
            views = []
            for v in (x, x.flip(3)):
                maps, last = model.backbone.forward_maps(v)
                vis = model.neck(maps)
                w = ((vis - 0.3) / 0.4).clamp(0, 1)
                views.append((vis, model.backbone.embed(last, w)))
        (vis, (e1, n1)), (_, (e2, n2)) = views
        raw = e1 * n1 + e2 * n2
        torch.testing.assert_close(out['embedding'],
                                   raw / raw.norm(dim=1, keepdim=True))
        torch.testing.assert_close(out['visibility'], vis)  # not stretched
        self.assertGreater(
            float((out['embedding'] - ref['embedding']).abs().max()), 1e-4)
        # Without an occlusion head (FaceRecognizer drops one a checkpoint
        # lacks): all visible, the plain embedding.
        model.neck = None
        with torch.no_grad():
            torch.testing.assert_close(model.extract(x)['embedding'],
                                       ref['embedding'], atol=0, rtol=0)

    def test_global_vis_config_errors(self):
        with self.assertRaisesRegex(ConfigError, 'global_vis must be one of'):
            build(train_cfg=dict(global_vis='true'))
        with self.assertRaisesRegex(ConfigError, 'True or False'):
            build(test_cfg=dict(global_vis='pred'))
        with self.assertRaisesRegex(ConfigError, 'occlusion head'):
            build(neck=None, qaconv_head=None,
                  train_cfg=dict(global_vis='gt'))
        with self.assertRaisesRegex(ConfigError, 'occlusion head'):
            build(neck=None, qaconv_head=None, test_cfg=dict(global_vis=True))
        with self.assertRaisesRegex(ConfigError, 'global_vis_range.*low < high'):
            build(test_cfg=dict(global_vis=True, global_vis_range=(0.7, 0.3)))
        # None is 'none'; a model trained weighted may be tested unweighted.
        model = build(train_cfg=dict(global_vis=None))
        self.assertEqual(model.train_cfg['global_vis'], 'none')
        build(train_cfg=dict(global_vis='gt'), test_cfg=dict(global_vis=False))

    def test_pool_vis_chooses_the_map_templates_pool(self):
        self.assertIsNone(build(test_cfg=dict(vis_range=(0.3, 0.7)))
                          .pool_vis_range)
        self.assertEqual(build(test_cfg=dict(vis_range=(0.3, 0.7),
                                             pool_vis='calibrated'))
                         .pool_vis_range, (0.3, 0.7))
        # Asked for calibrated pooling without a calibration: raw maps, said
        # once in the log (it was silent).
        uncalibrated = build(test_cfg=dict(pool_vis='calibrated'))
        from unittest import mock
        with mock.patch('oaml_mm.models.recognizers.oaml.print_log') as log:
            self.assertIsNone(uncalibrated.pool_vis_range)
            self.assertIsNone(uncalibrated.pool_vis_range)
        self.assertEqual(log.call_count, 1)
        self.assertIn('no test_cfg.vis_range', log.call_args[0][0])
        with self.assertRaisesRegex(ConfigError, "pool_vis must be one of"):
            build(test_cfg=dict(pool_vis='stretched'))
        # The matcher stretches a map unless told it is calibrated already.
        model = build(test_cfg=dict(vis_range=(0.3, 0.7))).eval()
        c, side = model.qaconv_head.in_channels, model.qaconv_head.feat_size
        maps = torch.nn.functional.normalize(torch.randn(2, c, side, side),
                                             dim=1)
        vis = torch.rand(2, 1, side, side)
        cal = calibrate_visibility(vis, (0.3, 0.7))
        with torch.no_grad():
            torch.testing.assert_close(
                model.match_pairs(maps[:1], maps[1:], vis[:1], vis[1:]),
                model.match_pairs(maps[:1], maps[1:], cal[:1], cal[1:],
                                  calibrated=True))
            torch.testing.assert_close(
                model.match(maps[:1], maps[1:], vis[:1], vis[1:]),
                model.match(maps[:1], maps[1:], cal[:1], cal[1:],
                            calibrated=True))

    def test_one_vis_range_for_qaconv_and_the_global_branch(self):
        # test_cfg.vis_range is the one calibration; the older keys set it too.
        x = self._inputs()
        ref = build(qaconv_head=dict(TINY['qaconv_head'], vis_range=(0.3, 0.7)),
                    test_cfg=dict(global_vis=True,
                                  global_vis_range=(0.3, 0.7))).eval()
        for name, kw in (
                ('test_cfg.vis_range',
                 dict(test_cfg=dict(global_vis=True, vis_range=(0.3, 0.7)))),
                ('qaconv_head.vis_range',
                 dict(qaconv_head=dict(TINY['qaconv_head'],
                                       vis_range=(0.3, 0.7)),
                      test_cfg=dict(global_vis=True))),
                ('test_cfg.global_vis_range',
                 dict(test_cfg=dict(global_vis=True,
                                    global_vis_range=[0.3, 0.7])))):
            model = build(**kw).eval()
            with self.subTest(key=name), torch.no_grad():
                self.assertEqual(model.vis_range, (0.3, 0.7))
                self.assertEqual(model.qaconv_head.vis_range, (0.3, 0.7))
                self.assertEqual(model.test_cfg['global_vis_range'], (0.3, 0.7))
                out, want = model.extract(x), ref.extract(x)
                torch.testing.assert_close(out['embedding'], want['embedding'],
                                           atol=0, rtol=0)
                maps = out['feature_map'] if 'feature_map' in out else \
                    model.backbone(x)[0]
                torch.testing.assert_close(
                    model.match(maps, maps, out['visibility'],
                                out['visibility']),
                    ref.match(maps, maps, out['visibility'], out['visibility']),
                    atol=0, rtol=0)
                torch.testing.assert_close(
                    model.calibrate_visibility(out['visibility']),
                    ((out['visibility'] - 0.3) / 0.4).clamp(0, 1))
        # The stretch really changes QAConv's scores and the embedding.
        raw = build(test_cfg=dict(global_vis=True)).eval()
        self.assertIsNone(raw.vis_range)
        with torch.no_grad():
            self.assertGreater(float((raw.extract(x)['embedding'] -
                                      ref.extract(x)['embedding']).abs().max()),
                               1e-4)

    def test_vis_range_set_twice_differently_is_refused(self):
        # The two older names differing, without test_cfg.vis_range: refused.
        with self.assertRaisesRegex(
                ConfigError, r'global_vis_range=\(0\.2, 0\.8\).*'
                r'qaconv_head\.vis_range=\(0\.3, 0\.7\)|'
                r'qaconv_head\.vis_range=\(0\.3, 0\.7\).*'
                r'global_vis_range=\(0\.2, 0\.8\)'):
            build(qaconv_head=dict(TINY['qaconv_head'], vis_range=(0.3, 0.7)),
                  test_cfg=dict(global_vis_range=(0.2, 0.8)))
        with self.assertRaisesRegex(
                ConfigError, r'global_vis_range=\(0\.2, 0\.8\).*'
                r'qaconv_head\.vis_range'):
            build(qaconv_head=dict(TINY['qaconv_head'], vis_range=(0.3, 0.7)),
                  test_cfg=dict(global_vis_range=(0.2, 0.8)))
        with self.assertRaisesRegex(ConfigError,
                                    r'test_cfg\.vis_range: .*low < high'):
            build(test_cfg=dict(vis_range=(0.7, 0.3)))
        # Equal values under several keys are one setting.
        model = build(qaconv_head=dict(TINY['qaconv_head'], vis_range=(0.3, 0.7)),
                      test_cfg=dict(vis_range=(0.3, 0.7),
                                    global_vis_range=(0.3, 0.7)))
        self.assertEqual(model.vis_range, (0.3, 0.7))

    def test_explicit_vis_range_wins_over_older_names(self):
        # test_cfg.vis_range given (None included) overrides what an older
        # config set under qaconv_head.vis_range / test_cfg.global_vis_range.
        for value in ((0.2, 0.8), None):
            with self.subTest(value=value):
                model = build(
                    qaconv_head=dict(TINY['qaconv_head'], vis_range=(0.3, 0.7)),
                    test_cfg=dict(vis_range=value,
                                  global_vis_range=(0.3, 0.7)))
                self.assertEqual(model.vis_range, value)
                self.assertEqual(model.qaconv_head.vis_range, value)
                self.assertEqual(model.test_cfg['global_vis_range'], value)

    def test_shipped_configs_take_vis_range_from_the_command_line(self):
        # --cfg-options model.test_cfg.vis_range=... on a shipped config: the
        # documented override, None switching the stretch off.
        root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
        for path in (
                ('configs', 'synthface', 'oaml_ir18_synthface.py'),
                ('projects', 'occlusion_study', 'configs',
                 'oaml_ir18_synthface_visemb.py')):
            cfg = load_config(osp.join(root, *path))
            self.assertEqual(MODELS.build(copy.deepcopy(cfg.model)).vis_range,
                             (0.3, 0.7))
            for value in ((0.2, 0.8), None):
                with self.subTest(config=path[-1], value=value):
                    over = copy.deepcopy(cfg)
                    over.merge_from_dict({'model.test_cfg.vis_range': value})
                    model = MODELS.build(over.model)
                    self.assertEqual(model.vis_range, value)
                    self.assertEqual(model.qaconv_head.vis_range, value)

    def _inputs(self):
        return build().data_preprocessor(batch(n=4, n_occ=0), False)['inputs']

    def test_visemb_config_is_the_demo_with_global_vis(self):
        root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
        base = load_config(osp.join(root, 'configs', 'synthface',
                                    'oaml_ir18_synthface.py')).model
        cfg = load_config(osp.join(root, 'projects', 'occlusion_study', 'configs',
                                   'oaml_ir18_synthface_visemb.py')).model
        model = MODELS.build(copy.deepcopy(cfg))
        self.assertEqual(model.train_cfg['global_vis'], 'gt_or_pred')
        self.assertIs(model.test_cfg['global_vis'], True)
        self.assertEqual(model.test_cfg['global_vis_range'], (0.3, 0.7))
        for key in ('train_cfg', 'test_cfg'):
            cfg[key] = {k: v for k, v in cfg[key].items()
                        if not k.startswith('global_vis')}
        self.assertEqual(cfg.to_dict(), base.to_dict())

    def test_config_errors(self):
        with self.assertRaises(ConfigError):
            build(head=dict(type='AdaFaceHead', in_channels=8, num_classes=4))
        with self.assertRaises(ConfigError):
            build(train_cfg=dict(qaconv_train_vis='both'))
        with self.assertRaises(ConfigError):
            build(loss_weights=dict(adaface=1.0, bogus=1.0))

    def test_misspelt_train_and_test_cfg_keys_refused(self):
        # flip_tset=True would be kept and never read: a test run without the
        # flip test the user asked for.
        with self.assertRaisesRegex(
                ConfigError, r"unknown test_cfg key\(s\) 'flip_tset' \(did you "
                r"mean 'flip_test'\?\)"):
            build(test_cfg=dict(flip_tset=True))
        with self.assertRaisesRegex(
                ConfigError, r"unknown train_cfg key\(s\) 'occ_on_mian' \(did "
                r"you mean 'occ_on_main'\?\)"):
            build(train_cfg=dict(occ_on_mian=True))
        self.assertTrue(build(test_cfg=dict(flip_test=True)).test_cfg[
            'flip_test'])

    def test_switches_that_are_not_booleans_refused(self):
        # The string 'no' (--cfg-options model.test_cfg.flip_test=no) is
        # truthy: the flip test would run while the user switched it off.
        for section, key in (('test_cfg', 'flip_test'),
                             ('test_cfg', 'half_maps'),
                             ('test_cfg', 'return_feature_maps'),
                             ('train_cfg', 'occ_on_main')):
            with self.subTest(key=key):
                with self.assertRaisesRegex(
                        ConfigError, rf"{section}\.{key} must be True or "
                        r"False, got 'no'"):
                    build(**{section: {key: 'no'}})


MS_NECK = dict(type='MultiScaleOcclusionHead', in_channels=(16, 32, 64),
               channels=4, out_size=28)


class TestOAMLRecognizerOtherGrid(unittest.TestCase):
    """64x64 faces: 4x4 maps. The grid side comes from the model end to end."""

    def test_feat_size_none_takes_the_backbone_grid(self):
        # --cfg-options model.qaconv_head.feat_size=None on a shipped config
        # means the same as leaving it out: the backbone's map side.
        root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
        for name in ('oaml_ir18_synthface.py', 'oaml_ir18_synthface_stage3.py'):
            cfg = load_config(osp.join(root, 'configs', 'synthface', name))
            cfg.merge_from_dict({'model.backbone.input_size': 64,
                                 'model.qaconv_head.feat_size': None})
            with self.subTest(config=name):
                model = MODELS.build(cfg.model)
                self.assertEqual(model.qaconv_head.feat_size,
                                 model.backbone.map_size)
                self.assertEqual(model.qaconv_head.fc.in_features,
                                 model.backbone.map_size ** 2)
        self.assertEqual(model.backbone.map_size, 8)  # stage 3 of 64x64
        for bad in (None, 0, 7.5, '7'):
            with self.subTest(feat_size=bad), self.assertRaisesRegex(
                    ConfigError, r'QAConvHead: feat_size .*positive int'):
                MODELS.build(dict(TINY['qaconv_head'], feat_size=bad))

    def test_train_step_predict_and_metric_on_a_4x4_grid(self):
        from mmpretrain.structures import DataSample as Sample

        from oaml_mm.datasets.transforms import PackFaceInputs
        from oaml_mm.evaluation.metrics import VerificationMetric
        model = build(backbone=dict(TINY['backbone'], input_size=64))
        self.assertEqual(model.backbone.map_size, 4)
        self.assertEqual(model.qaconv_head.feat_size, 4)  # not the default 7
        # Training: the occlusion stream's masks packed on the model's grid.
        pack = PackFaceInputs(grid=(model.backbone.map_size, ) * 2)
        data = batch(size=64)
        mask = torch.ones(64, 64).numpy()
        mask[40:] = 0.0
        data['occlusion']['data_samples'] = [
            pack(dict(img=torch.zeros(64, 64, 3, dtype=torch.uint8).numpy(),
                      visibility_mask=mask))['data_samples'] for _ in range(4)]
        self.assertEqual(tuple(data['occlusion']['data_samples'][0]
                               .gt_visibility.shape), (1, 4, 4))
        optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
        losses = model.train_step(data, optim)
        for key in ('loss_adaface', 'loss_qaconv', 'loss_occlusion'):
            self.assertTrue(torch.isfinite(losses[key]), key)
        # Prediction on the 4x4 grid.
        model.eval()
        model.test_cfg['return_feature_maps'] = True
        x = model.data_preprocessor(batch(n=8, n_occ=0, size=64),
                                    False)['inputs']
        with torch.no_grad():
            preds = model.predict(x)
        self.assertEqual(tuple(preds[0].visibility.shape), (1, 4, 4))
        self.assertEqual(tuple(preds[0].feature_map.shape)[-2:], (4, 4))
        # The metric's ablation: QAConv with predicted / true / no visibility,
        # the head's error per type, all on the model's grid.
        metric = VerificationMetric('g4', progress=False, nrof_folds=2,
                                    visibility_ablation=True)
        metric.bind_model(model)
        samples = []
        for i, p in enumerate(preds):
            s = Sample(metainfo=dict(pair_index=i // 2, pair_slot=i % 2,
                                     issame=i % 4 < 2,
                                     occlusion_type=('none', 'hand')[i % 2]))
            for key in ('embedding', 'feature_map', 'visibility'):
                s.set_field(p.get(key), key)
            s.set_field(torch.ones(1, 4, 4) if i % 2 == 0 else
                        pack(dict(img=mask[..., None].repeat(3, 2),
                                  visibility_mask=mask))[
                                      'data_samples'].gt_visibility,
                        'gt_visibility')
            samples.append(s.to_dict())
        metric.process({}, samples)
        out = metric.evaluate(len(samples))
        for key in ('qaconv/accuracy', 'qaconv_gt_vis/accuracy',
                    'qaconv_no_vis/accuracy', 'visibility/MAE',
                    'visibility/MAE_hand'):
            self.assertTrue(np.isfinite(out[f'g4/{key}']), key)
        pred = torch.stack([p.visibility for p in preds]).half().float()
        self.assertAlmostEqual(out['g4/visibility/MAE_none'],
                               float((1 - pred[0::2]).abs().mean()), places=3)


class TestOAMLRecognizerMultiScaleHead(unittest.TestCase):
    """OAMLRecognizer with a neck that reads backbone stages (reads='stages')."""

    def test_trains_a_step_and_predicts(self):
        model = build(neck=MS_NECK, train_cfg=dict(occ_on_main=True))
        optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.05))
        before = copy.deepcopy(model.neck.state_dict())
        model.train()
        losses = model.train_step(batch(), optim)
        self.assertTrue(torch.isfinite(losses['loss_occlusion']))
        self.assertFalse(torch.equal(before['out.weight'],
                                     model.neck.out.weight))
        model.eval()
        data = model.data_preprocessor(batch(n=2, n_occ=0), False)
        out = model(data['inputs'], data['data_samples'], mode='predict')
        self.assertEqual(tuple(out[0].visibility.shape), (1, 7, 7))
        with torch.no_grad():
            stages = model.backbone.forward_stages(data['inputs'])
            ref = model.neck(stages[1:], grid_size=7)
        torch.testing.assert_close(out[1].visibility, ref[1])
        # The BatchNorm-folded copy (FaceRecognizer's CPU path) agrees.
        from oaml_mm.models.utils import fold_batchnorm
        with torch.no_grad():
            a = model.extract(data['inputs'])
            b = fold_batchnorm(model).extract(data['inputs'])
        for key in ('embedding', 'visibility'):
            torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-4)

    def test_gradient_does_not_reach_the_backbone(self):
        model = build(neck=MS_NECK)
        data = model.data_preprocessor(batch(), True)
        for key, receives, untouched in (
                ('loss_occlusion', ['neck'],
                 ['backbone', 'head', 'qaconv_head']),
                ('loss_qaconv', ['backbone'], ['neck']),
                ('loss_adaface', ['backbone'], ['neck'])):
            model.zero_grad(set_to_none=True)
            model(**data, mode='loss')[key].backward()
            for name in receives:
                self.assertTrue(grads_of(getattr(model, name)), key)
            for name in untouched:
                self.assertFalse(grads_of(getattr(model, name)), key)

    def test_backbone_trains_as_with_the_last_stage_head(self):
        # The neck only reads detached stages: with QAConv on the true masks
        # (the SynthFace configs) the backbone's gradient and BatchNorm
        # statistics are those of the model with OcclusionHead.
        out = []
        for neck in (TINY['neck'], MS_NECK):
            model = build(neck=neck, train_cfg=dict(occ_on_main=True,
                                                    qaconv_train_vis='gt'))
            data = model.data_preprocessor(batch(), True)
            losses = model(**data, mode='loss')
            (losses['loss_adaface'] + losses['loss_qaconv']
             + losses['loss_occlusion']).backward()
            out.append((torch.cat([p.grad.flatten()
                                   for p in model.backbone.parameters()]),
                        torch.cat([b.float().flatten()
                                   for b in model.backbone.buffers()])))
        torch.testing.assert_close(out[1][0], out[0][0], atol=1e-4, rtol=1e-3)
        torch.testing.assert_close(out[1][1], out[0][1])

    def test_grid_follows_the_maps(self):
        model = build(neck=MS_NECK,
                      backbone=dict(type='IResNet', depth=18, width_mult=0.125,
                                    embedding_size=16, dropout=0.0,
                                    map_stage=3),
                      qaconv_head=dict(type='QAConvHead', in_channels=32,
                                       feat_size=14)).eval()
        data = model.data_preprocessor(batch(n=2, n_occ=0), False)
        with torch.no_grad():
            vis = model.extract(data['inputs'])['visibility']
        self.assertEqual(tuple(vis.shape), (2, 1, 14, 14))

    def test_config_errors(self):
        with self.assertRaisesRegex(ConfigError, 'stages'):
            build(neck=dict(MS_NECK, in_channels=(16, 32, 32)))
        with self.assertRaisesRegex(ConfigError, 'occ_target'):
            build(train_cfg=dict(occ_target='pixels'))
        with self.assertRaisesRegex(ConfigError, 'occ_target'):
            build(neck=None, train_cfg=dict(occ_target='damage'))


class TestOAMLRecognizerDamageTarget(unittest.TestCase):
    """train_cfg.occ_target: the feature damage of pasted occluders."""

    def _targets(self, neck, mode):
        model = build(neck=neck, train_cfg=dict(occ_target=mode))
        data = model.data_preprocessor(batch(), True)
        occ = data['occlusion']
        # The stream's images are the main batch's first ones (batch()): other
        # faces' occluders, so that pasting changes something.
        occ['inputs'] = occ['inputs'].roll(1, 0)
        size = getattr(model.neck, 'target_size', 7)
        _, target = model._damage_batch(data['inputs'], occ['inputs'],
                                        occ['data_samples'], size)
        losses = model(**data, mode='loss')
        self.assertTrue(torch.isfinite(losses['loss_occlusion']))
        return target

    def test_targets(self):
        # Stream samples 0 and 2 cover rows 4-6, samples 1 and 3 cover nothing.
        for neck, size in ((None, 7), (MS_NECK, 28)):
            kw = {} if neck is None else dict(neck=neck)
            damage = self._targets(kw.get('neck', TINY['neck']), 'damage')
            both = self._targets(kw.get('neck', TINY['neck']), 'mask*damage')
            self.assertEqual(tuple(damage.shape), (4, 1, size, size))
            # Nothing pasted: the features do not move, all visible.
            torch.testing.assert_close(damage[1::2], torch.ones_like(damage[1::2]))
            # Pasted: damaged somewhere, in [0, 1], and the product is below
            # the mask (0 on covered rows).
            self.assertLess(float(damage[0::2].min()), 0.5)
            self.assertTrue(bool(((damage >= 0) & (damage <= 1)).all()))
            rows = size * 4 // 7
            self.assertEqual(float(both[0::2, :, rows:].abs().max()), 0.0)
            self.assertTrue(bool((both <= damage + 1e-6).all()))


SEGMENTER = dict(type='OcclusionSegmenter', channels=(4, 8, 8, 8))


class TestOAMLRecognizerWithSegmenter(unittest.TestCase):
    """OAMLRecognizer with an image-reading neck (OcclusionSegmenter)."""

    def test_trains_a_step_and_the_segmenter_reads_the_image(self):
        model = build(neck=dict(SEGMENTER),
                      train_cfg=dict(occ_on_main=True))
        data = model.data_preprocessor(batch(), True)
        seen = {}
        forward = model.neck.forward_logits

        def spy(images):
            seen.setdefault('shapes', []).append(tuple(images.shape))
            return forward(images)

        model.neck.forward_logits = spy
        losses = model(**data, mode='loss')
        # One forward over the main batch's and the occlusion stream's images.
        self.assertEqual(seen['shapes'], [(12, 3, 112, 112)])
        for key, receives, untouched in (
                ('loss_occlusion', ['neck'],
                 ['backbone', 'head', 'qaconv_head']),
                ('loss_qaconv', ['backbone', 'qaconv_head'], ['neck', 'head'])):
            model.zero_grad(set_to_none=True)
            model(**data, mode='loss')[key].backward()
            for name in receives:
                self.assertTrue(grads_of(getattr(model, name)), key + name)
            for name in untouched:
                self.assertFalse(grads_of(getattr(model, name)), key + name)
        self.assertTrue(torch.isfinite(losses['loss_occlusion']))

    def test_frozen_segmenter_gets_no_loss_and_no_grad(self):
        model = build(neck=dict(SEGMENTER, frozen=True))
        optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.02))
        before = {k: v.clone() for k, v in model.neck.state_dict().items()}
        conv = model.backbone.state_dict()
        conv_key = next(k for k in conv if k.endswith('weight'))
        conv_before = conv[conv_key].clone()
        model.train()
        self.assertFalse(model.neck.training)
        out = model.train_step(batch(), optim)
        self.assertNotIn('loss_occlusion', out)
        self.assertFalse(torch.equal(model.backbone.state_dict()[conv_key],
                                     conv_before))
        self.assertTrue(all(p.grad is None for p in model.neck.parameters()))
        # Weights and BN statistics alike.
        for k, v in model.neck.state_dict().items():
            torch.testing.assert_close(v, before[k])

    def test_predict_on_the_maps_grid(self):
        for stage, side, width in ((4, 7, 64), (3, 14, 32)):
            model = build(
                backbone=dict(TINY['backbone'], map_stage=stage),
                neck=dict(SEGMENTER),
                qaconv_head=dict(type='QAConvHead', in_channels=width,
                                 feat_size=side)).eval()
            x = model.data_preprocessor(batch(2, 0), False)['inputs']
            feats = model.extract(x, return_feature_maps=True)
            self.assertEqual(tuple(feats['visibility'].shape),
                             (2, 1, side, side))
            torch.testing.assert_close(feats['visibility'],
                                       model.neck(x, out_size=side))
            samples = model.predict(x)
            self.assertEqual(tuple(samples[0].visibility.shape),
                             (1, side, side))

    def test_batchnorm_folding_keeps_the_prediction(self):
        from oaml_mm.models.utils import fold_batchnorm
        model = build(neck=dict(SEGMENTER))
        model.train()
        model(**model.data_preprocessor(batch(), True), mode='loss')
        model.eval()
        x = model.data_preprocessor(batch(2, 0), False)['inputs']
        ref = model.extract(x)['visibility']
        folded = fold_batchnorm(model)
        self.assertFalse(any(isinstance(m, torch.nn.BatchNorm2d)
                             for m in folded.neck.modules()))
        torch.testing.assert_close(folded.extract(x)['visibility'], ref,
                                   atol=1e-4, rtol=1e-4)

    def test_loads_a_segmenter_checkpoint_by_config(self):
        import tempfile
        torch.manual_seed(1)
        seg = MODELS.build(dict(type='VisibilitySegmentor',
                                segmenter=SEGMENTER)).eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = osp.join(tmp, 'seg.pth')
            torch.save(dict(state_dict=seg.state_dict()), path)
            model = build(neck=dict(SEGMENTER, frozen=True, init_cfg=dict(
                type='Pretrained', checkpoint=path, prefix='segmenter.')))
            model.init_weights()
        model.eval()
        x = model.data_preprocessor(batch(2, 0), False)['inputs']
        torch.testing.assert_close(model.extract(x)['visibility'],
                                   seg(x).reshape(2, 1, 7, 4, 7, 4).mean(
                                       (3, 5)))

    def test_neck_reading_something_else_is_refused(self):
        from unittest import mock

        from oaml_mm.models.necks import OcclusionSegmenter
        with mock.patch.object(OcclusionSegmenter, 'reads', 'audio'):
            with self.assertRaisesRegex(ConfigError, "reads 'audio'"):
                build(neck=dict(SEGMENTER))


if __name__ == '__main__':
    unittest.main()
