"""ThresholdCalibrationHook and VisibilityVisualizationHook on stand-in runners."""
import os.path as osp
import tempfile
import unittest
from types import SimpleNamespace
from unittest import mock

import numpy as np
import torch
from mmengine.logging import MessageHub

from oaml_mm.apis import FaceRecognizer
from oaml_mm.engine.hooks import (ThresholdCalibrationHook,
                                  VisibilityVisualizationHook)
from oaml_mm.errors import CheckpointError, ConfigError
from oaml_mm.evaluation.functional import (apply_visibility_fusion,
                                           calibrate_thresholds,
                                           fit_visibility_fusion, fuse_scores,
                                           impostor_stats, threshold_at_far)
from oaml_mm.utils import atomic_save, safe_load_checkpoint
from tests.test_apis.helpers import TINY_MODEL, face


class TestThresholdAtFar(unittest.TestCase):

    def test_numbers(self):
        s = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
        y = np.array([1, 1, 0, 1, 0], bool)
        self.assertEqual(threshold_at_far(s, y, 0.5), (0.2, 1.0, 0.5))
        # FAR 0.4 < one impostor in two: only scores above 0.7 are accepted.
        thr, tar, far = threshold_at_far(s, y, 0.4)
        self.assertEqual((thr, far), (0.8, 0.0))
        self.assertAlmostEqual(tar, 2 / 3)
        # Every impostor above every genuine: the threshold clears them all.
        thr, tar, far = threshold_at_far([0.1, 0.9], [1, 0], 0.01)
        self.assertGreater(thr, 0.9)
        self.assertEqual((tar, far), (0.0, 0.0))
        with self.assertRaises(ConfigError):
            threshold_at_far(s, y, 0.0)

    def test_far_is_respected_on_random_scores(self):
        rng = np.random.default_rng(0)
        s = np.r_[rng.normal(2, 1, 500), rng.normal(0, 1, 5000)]
        y = np.r_[np.ones(500, bool), np.zeros(5000, bool)]
        for far in (1e-3, 1e-2, 1e-1):
            thr, tar, reached = threshold_at_far(s, y, far)
            self.assertLessEqual((s[~y] >= thr).mean(), far)
            self.assertAlmostEqual((s[~y] >= thr).mean(), reached)
            self.assertAlmostEqual((s[y] >= thr).mean(), tar)
            # The next lower score would break the target.
            lower = s[s < thr].max()
            self.assertGreater((s[~y] >= lower).mean(), far)

    def test_calibrate_fused_uses_evaluation_fusion(self):
        rng = np.random.default_rng(1)
        y = np.r_[np.ones(50, bool), np.zeros(200, bool)]
        a = np.r_[rng.normal(0.6, 0.1, 50), rng.normal(0, 0.1, 200)]
        q = np.r_[rng.normal(5, 2, 50), rng.normal(0, 2, 200)]
        cal = calibrate_thresholds({'adaface': a, 'qaconv': q}, y, 0.01,
                                   (0.3, 0.7))
        stats = [impostor_stats(a, y), impostor_stats(q, y)]
        self.assertEqual(cal['fuse_stats'], {'adaface': list(stats[0]),
                                             'qaconv': list(stats[1])})
        fused = fuse_scores([a, q], (0.3, 0.7), stats)
        self.assertEqual(cal['branches']['fused']['threshold'],
                         threshold_at_far(fused, y, 0.01)[0])
        self.assertEqual(cal['decision_branch'], 'fused')
        only = calibrate_thresholds({'adaface': a}, y, 0.01)
        self.assertEqual(set(only['branches']), {'adaface'})
        self.assertEqual(only['decision_branch'], 'adaface')


class _Metric:

    def __init__(self, name, scores, labels):
        self.dataset_name = name
        self.scores = scores
        self.labels = labels
        self.fuse_weights = (0.5, 0.5)


class TestThresholdCalibrationHook(unittest.TestCase):

    def test_calibrates_stores_and_rewrites_last_checkpoint(self):
        rng = np.random.default_rng(0)
        y = np.r_[np.ones(100, bool), np.zeros(900, bool)]
        scores = {'adaface': np.r_[rng.normal(.5, .1, 100),
                                   rng.normal(0, .1, 900)],
                  'qaconv': np.r_[rng.normal(3, 1, 100), rng.normal(0, 1, 900)]}
        other = _Metric('other', {'adaface': np.zeros(4)},
                        np.array([1, 0, 1, 0], bool))
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = osp.join(tmp, 'iter_5.pth')
            atomic_save({'state_dict': {'w': torch.ones(2)},
                         'meta': {'iter': 5}}, ckpt)
            with open(osp.join(tmp, 'last_checkpoint'), 'w') as f:
                f.write(ckpt)
            runner = SimpleNamespace(
                val_loop=SimpleNamespace(evaluators=[SimpleNamespace(
                    metrics=[_Metric('clean', scores, y), other])]),
                message_hub=MessageHub.get_instance('calib_test'),
                iter=5, epoch=0, work_dir=tmp)
            hook = ThresholdCalibrationHook(far=0.01, datasets=['clean'])
            hook.after_val_epoch(runner, {})
            cal = runner.message_hub.get_info('oaml_thresholds')
            self.assertEqual(cal['source'], 'clean')
            self.assertEqual(cal['num_pairs'], 1000)
            self.assertEqual(cal['branches']['adaface']['threshold'],
                             threshold_at_far(scores['adaface'], y, 0.01)[0])
            saved = {'meta': {}}
            hook.before_save_checkpoint(runner, saved)
            self.assertEqual(saved['meta']['oaml_thresholds'], cal)
            hook.after_train(runner)
            loaded = safe_load_checkpoint(ckpt)
            self.assertEqual(loaded['meta']['oaml_thresholds'], cal)
            self.assertEqual(loaded['meta']['iter'], 5)
            # A FaceRecognizer-style reader gets the thresholds back.
            self.assertIn('fused', loaded['meta']['oaml_thresholds']['branches'])

    def _runner(self, metrics, name):
        return SimpleNamespace(
            val_loop=SimpleNamespace(evaluators=[SimpleNamespace(
                metrics=metrics)]),
            message_hub=MessageHub.get_instance(name), iter=1, epoch=0,
            work_dir='/nonexistent', hooks=[])

    def test_records_the_settings_it_calibrated_under(self):
        # Thresholds hold only for scores made under the same preprocessing;
        # FaceRecognizer compares these with its own config's.
        from oaml_mm.apis import FaceRecognizer
        from tests.test_apis.helpers import TINY_MODEL
        rng = np.random.default_rng(3)
        y = np.r_[np.ones(50, bool), np.zeros(200, bool)]
        a = np.r_[rng.normal(.5, .1, 50), rng.normal(0, .1, 200)]
        runner = self._runner([_Metric('clean', {'adaface': a}, y)],
                              'calib_settings')
        runner.model = FaceRecognizer(TINY_MODEL).model
        hook = ThresholdCalibrationHook(far=0.01)
        hook.after_val_epoch(runner, {})
        settings = hook.calibration['settings']
        self.assertEqual(settings['channel_order'], 'bgr')
        self.assertTrue(settings['flip_test'])
        self.assertEqual(settings['input_size'], 112)
        self.assertEqual(settings['model'], 'OAMLRecognizer')

    def test_nonfinite_scores_are_not_calibrated(self):
        rng = np.random.default_rng(2)
        y = np.r_[np.ones(50, bool), np.zeros(200, bool)]
        a = np.r_[rng.normal(.5, .1, 50), rng.normal(0, .1, 200)]
        q = np.full(250, np.nan)  # what a metric leaves for a masked branch
        runner = self._runner([_Metric('clean', {'adaface': a, 'qaconv': q}, y)],
                              'calib_nan')
        hook = ThresholdCalibrationHook(far=0.01)
        hook.after_val_epoch(runner, {})
        self.assertEqual(set(hook.calibration['branches']), {'adaface'})
        self.assertEqual(hook.calibration['decision_branch'], 'adaface')
        self.assertEqual(hook.calibration['branches']['adaface']['threshold'],
                         threshold_at_far(a, y, 0.01)[0])
        runner = self._runner([_Metric('clean', {'adaface': np.full(250, np.nan)},
                                       y)], 'calib_nan2')
        hook = ThresholdCalibrationHook(far=0.01)
        hook.after_val_epoch(runner, {})
        self.assertIsNone(hook.calibration)

    def test_only_the_last_configured_hook_acts(self):
        default = ThresholdCalibrationHook(far=1e-3)
        custom = ThresholdCalibrationHook(far=1e-2)
        runner = SimpleNamespace(hooks=[default, custom])
        default.before_run(runner)
        custom.before_run(runner)
        default.calibration = {'far': 1e-3}
        custom.calibration = {'far': 1e-2}
        saved = {}
        default.before_save_checkpoint(runner, saved)
        self.assertEqual(saved, {})
        custom.before_save_checkpoint(runner, saved)
        self.assertEqual(saved['meta']['oaml_thresholds'], {'far': 1e-2})

    def test_default_runtime_calibrates(self):
        from oaml_mm.utils import load_config
        root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
        for name in ('oaml_ir18_synthface.py', 'adaface_ir18_synthface.py'):
            cfg = load_config(osp.join(root, 'configs/synthface', name))
            self.assertEqual(cfg.default_hooks.threshold_calibration,
                             dict(type='ThresholdCalibrationHook', far=1e-3))
            # The calibration split only: no test set is fitted on.
            self.assertEqual(
                [d.ann_file for d in cfg.val_dataloader.dataset.datasets],
                ['calib.bin'], name)
            self.assertEqual([e.dataset_name for e in cfg.val_evaluator],
                             ['calib'], name)
            tested = {d.ann_file
                      for d in cfg.test_dataloader.dataset.datasets}
            self.assertNotIn('calib.bin', tested, name)
            self.assertIn('clean.bin', tested, name)

    def test_bad_arguments(self):
        with self.assertRaises(ConfigError):
            ThresholdCalibrationHook(far=2.0)
        with self.assertRaises(ConfigError):
            ThresholdCalibrationHook(decision_branch='cosine')
        with self.assertRaisesRegex(ConfigError, 'fusion_C'):
            ThresholdCalibrationHook(fusion_C=0.0)

    def test_fits_visibility_fusion_and_hands_it_to_test_metrics(self):
        rng = np.random.default_rng(3)
        n = 400
        y = np.arange(n) % 2 == 0
        vis = rng.uniform(0, 1, (n, 2))
        v = vis.min(1)
        scores = {'adaface': 0.2 * (3 * v * y + rng.standard_normal(n)),
                  'qaconv': 5 * (3 * (1 - v) * y + rng.standard_normal(n))}
        m = _Metric('calib', scores, y)
        m.pair_visibility = vis
        runner = self._runner([m], 'calib_vis')
        hook = ThresholdCalibrationHook(far=0.05)
        hook.after_val_epoch(runner, {})
        cal = hook.calibration
        ref = fit_visibility_fusion(scores['adaface'], scores['qaconv'],
                                    vis[:, 0], vis[:, 1], y, source='calib')
        self.assertEqual(cal['vis_fusion'], ref)
        fv = apply_visibility_fusion(ref, scores['adaface'], scores['qaconv'],
                                     vis[:, 0], vis[:, 1])
        self.assertEqual(cal['branches']['fused_vis']['threshold'],
                         threshold_at_far(fv, y, 0.05)[0])
        self.assertEqual(cal['decision_branch'], 'fused_vis')
        # Stored next to the thresholds, loadable weights-only.
        with tempfile.TemporaryDirectory() as tmp:
            path = osp.join(tmp, 'iter_1.pth')
            ckpt = {'state_dict': {'w': torch.ones(1)}}
            hook.before_save_checkpoint(runner, ckpt)
            atomic_save(ckpt, path)
            loaded = safe_load_checkpoint(path)
        self.assertEqual(loaded['meta']['oaml_thresholds']['vis_fusion'], ref)
        self.assertIsNone(ref['vis_range'])
        # The metrics' visibility is of the calibrated map: the fit records
        # which one.
        m.pair_visibility_range = (0.3, 0.7)
        hook2 = ThresholdCalibrationHook(far=0.05)
        hook2.after_val_epoch(self._runner([m], 'calib_vis2'), {})
        self.assertEqual(hook2.calibration['vis_fusion']['vis_range'],
                         [0.3, 0.7])
        self.assertEqual(hook2.calibration['vis_fusion']['coef'], ref['coef'])
        # tools/test.py: the loaded checkpoint's fusion reaches the metrics
        # that take one, unless they were given their own.

        class _TestMetric:
            def __init__(self, name, given=False):
                self.dataset_name = name
                self.got, self.given = None, given

            def set_fusion_params(self, params, from_checkpoint=False):
                if not (self.given and from_checkpoint):
                    self.got = self.fusion_params = params

        tester = ThresholdCalibrationHook()
        metrics = [_TestMetric('test'), _TestMetric('test2', given=True),
                   _TestMetric('calib')]
        test_runner = SimpleNamespace(
            hooks=[tester], test_loop=SimpleNamespace(
                evaluator=SimpleNamespace(metrics=metrics)))
        tester.before_run(test_runner)
        tester.after_load_checkpoint(test_runner, loaded)
        with mock.patch('oaml_mm.engine.hooks.threshold_calibration_hook.'
                        'print_log') as log:
            tester.before_test(test_runner)
        self.assertEqual(metrics[0].got, ref)
        self.assertIsNone(metrics[1].got)
        # A test set named like a calibration set is flagged (warning).
        self.assertEqual(len(log.call_args_list), 1)
        self.assertIn('calib: the visibility fusion was fitted on a '
                      'validation set of this name', log.call_args[0][0])
        # No fusion in the checkpoint: nothing handed over.
        metrics[0].got = None
        tester.after_load_checkpoint(test_runner, {'meta': {}})
        tester.before_test(test_runner)
        self.assertIsNone(metrics[0].got)
        # A damaged one is refused with the field named.
        bad = {'meta': {'oaml_thresholds': {
            'vis_fusion': dict(ref, coef=[1.0])}}}
        with self.assertRaisesRegex(CheckpointError, "vis_fusion.*'coef'"):
            tester.after_load_checkpoint(test_runner, bad)

    def test_loaded_fusion_under_other_settings_is_not_applied(self):
        # tools/test.py: a checkpoint calibrated under another vis_range
        # holds a fusion fitted on other scores; it is not handed over (as
        # FaceRecognizer drops it), with one warning naming the setting. A
        # record that contradicts itself is refused.
        rng = np.random.default_rng(5)
        y = np.arange(200) % 2 == 0
        vis = rng.uniform(0, 1, (200, 2))
        params = fit_visibility_fusion(
            rng.standard_normal(200) + y, rng.standard_normal(200) + y,
            vis[:, 0], vis[:, 1], y, source='calib', vis_range=(0.2, 0.8))
        settings = dict(model='OAMLRecognizer', vis_range=[0.2, 0.8])
        loaded = {'meta': {'oaml_thresholds': dict(
            vis_fusion=params, settings=settings,
            branches={'fused_vis': dict(threshold=0.5)})}}

        class _TestMetric:
            dataset_name = 'test'
            got = None

            def set_fusion_params(self, params, from_checkpoint=False):
                self.got = params

        mod = 'oaml_mm.engine.hooks.threshold_calibration_hook.'
        for now, applied in ((settings, True),
                             (dict(settings, vis_range=[0.3, 0.7]), False)):
            metric = _TestMetric()
            tester = ThresholdCalibrationHook()
            runner = SimpleNamespace(
                hooks=[tester], model=torch.nn.Linear(1, 1),
                _load_from='work/iter_4.pth', test_loop=SimpleNamespace(
                    evaluator=SimpleNamespace(metrics=[metric])))
            tester.before_run(runner)
            with self.subTest(now=now['vis_range']), \
                    mock.patch(mod + 'embedding_settings', return_value=now), \
                    mock.patch(mod + 'print_log') as log:
                tester.after_load_checkpoint(runner, loaded)
                tester.before_test(runner)
                self.assertEqual(metric.got, params if applied else None)
                warnings = [c for c in log.call_args_list
                            if c.kwargs.get('level') == 30]
                self.assertEqual(len(warnings), 0 if applied else 1)
                if not applied:
                    self.assertRegex(
                        warnings[0][0][0], r'work/iter_4\.pth: it was '
                        r'calibrated under other settings .*vis_range '
                        r'\[0\.2, 0\.8\] at calibration vs \[0\.3, 0\.7\] now')
        bad = {'meta': {'oaml_thresholds': dict(
            loaded['meta']['oaml_thresholds'],
            settings=dict(settings, vis_range=[0.3, 0.7]))}}
        with mock.patch(mod + 'embedding_settings', return_value=settings), \
                self.assertRaisesRegex(
                    CheckpointError, r'iter_4\.pth.*contradicts itself.*'
                    r'vis_fusion\.vis_range is \[0\.2, 0\.8\].*'
                    r'settings\.vis_range is \[0\.3, 0\.7\]'):
            tester.after_load_checkpoint(runner, bad)
        # Settings with vis_range and a fusion without the field: written
        # before the fusion recorded its map, when it was fitted on the raw
        # map. Not a contradiction: handed over as it is (read as raw).
        older = {k: v for k, v in params.items() if k != 'vis_range'}
        old = {'meta': {'oaml_thresholds': dict(
            loaded['meta']['oaml_thresholds'], vis_fusion=older)}}
        metric = runner.test_loop.evaluator.metrics[0]
        with mock.patch(mod + 'embedding_settings', return_value=settings), \
                mock.patch(mod + 'print_log') as log:
            tester.after_load_checkpoint(runner, old)
            tester.before_test(runner)
        self.assertEqual(metric.got, older)
        self.assertFalse([c for c in log.call_args_list
                          if c.kwargs.get('level') == 30])

    def test_no_visibility_no_fusion(self):
        rng = np.random.default_rng(4)
        y = np.arange(100) % 2 == 0
        scores = {'adaface': rng.standard_normal(100) + y,
                  'qaconv': rng.standard_normal(100) + y}
        hook = ThresholdCalibrationHook(far=0.05)
        hook.after_val_epoch(self._runner([_Metric('c', scores, y)], 'novis'),
                             {})
        self.assertNotIn('vis_fusion', hook.calibration)
        self.assertEqual(hook.calibration['decision_branch'], 'fused')
        m = _Metric('c', scores, y)
        m.pair_visibility = np.ones((100, 2))
        off = ThresholdCalibrationHook(far=0.05, vis_fusion=False)
        off.after_val_epoch(self._runner([m], 'visoff'), {})
        self.assertNotIn('vis_fusion', off.calibration)


class _Visualizer:

    def __init__(self):
        self.images = []

    def add_image(self, name, image, step=0):
        self.images.append((name, image, step))


class TestVisibilityVisualizationHook(unittest.TestCase):

    def test_logs_fixed_batch(self):
        rec = FaceRecognizer(TINY_MODEL)
        model = rec.model.train()
        batches = [{'inputs': [torch.from_numpy(face(i + 3 * b)).permute(2, 0, 1)
                               for i in range(3)]} for b in range(3)]
        runner = SimpleNamespace(
            val_loop=SimpleNamespace(dataloader=batches), model=model,
            visualizer=_Visualizer(), epoch=2, iter=40)
        hook = VisibilityVisualizationHook(interval=1, num_images=5, ncol=4,
                                           scale=1)
        hook.before_train(runner)
        self.assertEqual(hook.batch.shape, (5, 3, 112, 112))
        hook.log_now(runner)
        name, img, step = runner.visualizer.images[0]
        self.assertEqual((name, step), ('visibility', 2))
        self.assertEqual(img.shape, (224, 448, 3))
        self.assertEqual(img.dtype, np.uint8)
        self.assertTrue(model.training)  # restored after drawing
        # Same faces every time: the picture only changes with the model.
        hook.log_now(runner)
        self.assertTrue(np.array_equal(runner.visualizer.images[1][1], img))
        hook2 = VisibilityVisualizationHook(dataloader_index=3)
        with self.assertRaisesRegex(ConfigError, 'dataloader_index 3'):
            hook2.before_train(runner)


if __name__ == '__main__':
    unittest.main()
