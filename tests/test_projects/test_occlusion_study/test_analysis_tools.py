"""projects.occlusion_study helpers of the SynthFace demo: run configs, the sweep
grid and the raw-pixel difficulty check."""
import contextlib
import io
import os
import os.path as osp
import shutil
import tempfile
import unittest

import numpy as np

from oaml_mm.synthface import SynthFaceConfig, generate_synthface
from oaml_mm.utils import load_config
from projects.occlusion_study import sweep_synthface
from projects.occlusion_study import synthface_pixel_baseline as pixel
from projects.occlusion_study import synthface_runs


class TestRunConfig(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp()

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def test_scale_and_sampler(self):
        path = synthface_runs.write_run_config(
            'adaface', osp.join(self.tmp, 'a'), '/data/sf', max_iters=40, lr=0.05,
            margin_warmup=0.2, seed=3, scale=32, sampler='pk')
        cfg = load_config(path)
        self.assertEqual(cfg.model.head.s, 32.0)
        self.assertEqual(cfg.train_dataloader.sampler.type, 'PKSampler')
        self.assertEqual(cfg.train_dataloader.sampler.num_instances, 4)
        self.assertEqual(cfg.optim_wrapper.optimizer.lr, 0.05)
        self.assertEqual(cfg.train_cfg.max_iters, 40)
        self.assertEqual(cfg.randomness.seed, 3)
        # Both parts of the training set moved with the data folder.
        roots = [d.data_root for d in cfg.train_dataloader.dataset.datasets]
        self.assertEqual(roots, ['/data/sf/train', '/data/sf/occluded'])

    def test_config_defaults_kept(self):
        cfg = load_config(synthface_runs.write_run_config(
            'oaml', osp.join(self.tmp, 'o'), '/data/sf'))
        shipped = load_config(synthface_runs.CONFIGS['oaml'])
        self.assertEqual(cfg.model.head.s, shipped.model.head.s)
        self.assertEqual(cfg.train_dataloader.sampler.type, 'PKSampler')
        self.assertEqual(tuple(cfg.model.test_cfg.vis_range), (0.3, 0.7))
        base = load_config(synthface_runs.CONFIGS['adaface'])
        self.assertEqual(base.train_dataloader.sampler.type, 'DefaultSampler')
        self.assertEqual(cfg.model.loss_weights.adaface,
                         shipped.model.loss_weights.adaface)

    def test_adaface_weight(self):
        cfg = load_config(synthface_runs.write_run_config(
            'oaml', osp.join(self.tmp, 'w'), '/data/sf', adaface_weight=0.6))
        # Not the shipped split, so the override is what is seen.
        self.assertAlmostEqual(cfg.model.loss_weights.adaface, 0.6)
        self.assertAlmostEqual(cfg.model.loss_weights.qaconv, 0.4)
        self.assertEqual(cfg.model.loss_weights.occlusion, 1.0)
        with self.assertRaisesRegex(ValueError, 'OAML setting'):
            synthface_runs.write_run_config(
                'adaface', osp.join(self.tmp, 'w2'), '/data/sf',
                adaface_weight=0.3)
        with self.assertRaisesRegex(ValueError, r'\(0, 1\)'):
            synthface_runs.write_run_config(
                'oaml', osp.join(self.tmp, 'w3'), '/data/sf', adaface_weight=1.0)

    def test_adaface_schedule(self):
        seg = 'configs/synthface/oaml_ir18_synthface_segmenter.py'
        self.assertEqual(synthface_runs.CONFIGS['oaml_seg'].split(osp.sep)[-3:],
                         seg.split('/'))
        cfg = load_config(synthface_runs.write_run_config(
            'oaml_seg_sched', osp.join(self.tmp, 's'), '/data/sf', max_iters=900,
            adaface_schedule='0.2:0.7'))
        hooks = [h for h in cfg.custom_hooks
                 if h.type == 'LossWeightScheduleHook']
        # The config's own ramp (0.1 -> 0.5) is replaced, not stacked.
        self.assertEqual(len(hooks), 1)
        self.assertEqual((hooks[0].start, hooks[0].end, hooks[0].total),
                         (0.2, 0.7, 1.0))
        self.assertAlmostEqual(cfg.model.loss_weights.adaface, 0.2)
        self.assertAlmostEqual(cfg.model.loss_weights.qaconv, 0.8)
        self.assertIn('MarginWarmupHook', [h.type for h in cfg.custom_hooks])
        # A fixed split removes the config's ramp.
        cfg = load_config(synthface_runs.write_run_config(
            'oaml_seg_sched', osp.join(self.tmp, 'f'), '/data/sf',
            adaface_schedule='0.3'))
        self.assertNotIn('LossWeightScheduleHook',
                         [h.type for h in cfg.custom_hooks])
        self.assertAlmostEqual(cfg.model.loss_weights.qaconv, 0.7)
        for kwargs, msg in ((dict(model='adaface'), 'OAML setting'),
                            (dict(adaface_weight=0.3), 'excludes'),
                            (dict(adaface_schedule='0.1:1.5'), r'\(0, 1\)'),
                            (dict(adaface_schedule='0.1-0.5'), 'W0:W1')):
            with self.subTest(**kwargs):
                kw = {'model': 'oaml', 'adaface_schedule': '0.1:0.5', **kwargs}
                with self.assertRaisesRegex(ValueError, msg):
                    synthface_runs.write_run_config(
                        kw.pop('model'), osp.join(self.tmp, 'x'), '/data/sf',
                        **kw)

    def test_split_schedule_parsing(self):
        self.assertEqual(synthface_runs.parse_split_schedule('0.3'), (0.3, 0.3))
        self.assertEqual(synthface_runs.parse_split_schedule('0.1:0.5'),
                         (0.1, 0.5))
        self.assertEqual(synthface_runs.split_schedule_tag('0.1:0.5'),
                         '0.1 : 0.9 -> 0.5 : 0.5')
        self.assertEqual(synthface_runs.split_schedule_tag('0.3'), '0.3 : 0.7')
        for bad in ('', '0', '1', '0.1:0.2:0.3', 'a:b'):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                synthface_runs.parse_split_schedule(bad)

    def test_loss_split_ablations(self):
        # The study's loss-split models keep their split through a run config and
        # differ from the model they vary in nothing else.
        for model, base, weight in (('oaml_ada03', 'oaml', 0.3),
                                    ('oaml_ada05', 'oaml', 0.5),
                                    ('oaml_ada03_visemb', 'oaml_visemb', 0.3),
                                    ('oaml_novis_ada05', 'oaml_novis', 0.5)):
            with self.subTest(model=model):
                ref = load_config(synthface_runs.write_run_config(
                    base, osp.join(self.tmp, base), '/data/sf', max_iters=1500))
                cfg = load_config(synthface_runs.write_run_config(
                    model, osp.join(self.tmp, model), '/data/sf',
                    max_iters=1500))
                w = cfg.model.loss_weights
                self.assertAlmostEqual(w.adaface, weight)
                self.assertAlmostEqual(w.qaconv, 1.0 - weight)
                self.assertEqual(w.occlusion, 1.0)
                self.assertNotEqual(ref.model.loss_weights.adaface, weight)
                for key in ('backbone', 'qaconv_head', 'head', 'neck',
                            'train_cfg', 'test_cfg'):
                    self.assertEqual(cfg.model.get(key), ref.model.get(key), key)
                for key in ('optim_wrapper', 'train_cfg', 'custom_hooks',
                            'test_evaluator'):
                    self.assertEqual(cfg[key], ref[key], key)


class TestSweepGrid(unittest.TestCase):

    def test_oaml_keeps_pk(self):
        args = sweep_synthface.parse_args(
            ['--samplers', 'pk', 'random', '--scales', '16', '32', '--lrs', '0.1',
             '--warmups', '0.3'])
        grid = sweep_synthface.make_grid(args)
        self.assertEqual(sum(g[0] == 'adaface' for g in grid), 4)
        self.assertEqual(sum(g[0] == 'oaml' for g in grid), 2)
        self.assertNotIn('random', [g[1] for g in grid if g[0] == 'oaml'])
        with self.assertRaises(SystemExit):
            sweep_synthface.parse_args(['--samplers', 'bogus'])

    def test_loss_weight_axis_is_oaml_only(self):
        args = sweep_synthface.parse_args(
            ['--samplers', 'pk', 'random', '--lrs', '0.1', '--warmups', '0.3',
             '--adaface-weights', '0.1', '0.5'])
        grid = sweep_synthface.make_grid(args)
        self.assertEqual([g[5] for g in grid if g[0] == 'adaface'],
                         [None, None])
        self.assertEqual([g[5] for g in grid if g[0] == 'oaml'], [0.1, 0.5])
        r = dict(model='oaml', lr=0.1, warmup=0.3, scale=None, sampler='pk',
                 adaface_weight=0.5)
        self.assertEqual(sweep_synthface._tag(r), 'lr=0.1 wu=0.3 pk aw=0.5')
        self.assertEqual(sweep_synthface._weights(r), '0.5 : 0.5')

    def test_split_schedule_axis(self):
        args = sweep_synthface.parse_args(
            ['--models', 'adaface', 'oaml_seg', '--lrs', '0.1', '--warmups', '0.3',
             '--adaface-schedules', '0.1', '0.1:0.5', '--segmenter', 'seg.pth'])
        grid = sweep_synthface.make_grid(args)
        self.assertEqual([g[5:] for g in grid],
                         [(None, None), (None, '0.1'), (None, '0.1:0.5')])
        r = dict(model='oaml_seg', lr=0.1, warmup=0.3, scale=None, sampler=None,
                 adaface_weight=None, adaface_schedule='0.1:0.5')
        self.assertEqual(sweep_synthface._tag(r), 'lr=0.1 wu=0.3 as=0.1:0.5')
        self.assertEqual(sweep_synthface._weights(r), '0.1 : 0.9 -> 0.5 : 0.5')
        for argv in (['--adaface-schedules', '0.1', '--adaface-weights', '0.1'],
                     ['--adaface-schedules', '0.1:2'],
                     ['--models', 'adaface', '--adaface-schedules', '0.1:0.5'],
                     ['--models', 'adaface', '--adaface-weights', '0.3']):
            with self.subTest(argv=argv), self.assertRaises(SystemExit):
                sweep_synthface.parse_args(argv)

    def test_a_value_given_twice_is_refused(self):
        # Both runs would train in one work dir at once ('0.1' and '0.1:0.1'
        # in two dirs, twice the same training).
        for argv, said in (
                (['--lrs', '0.1', '0.1'], '--lrs: 0.1 given twice'),
                (['--models', 'oaml', 'oaml'], '--models: oaml given twice'),
                (['--adaface-schedules', '0.1:0.5', '0.1:0.5'],
                 "'0.1:0.5' and '0.1:0.5' are one schedule"),
                (['--adaface-schedules', '0.1', '0.1:0.1'],
                 "'0.1' and '0.1:0.1' are one schedule")):
            err = io.StringIO()
            with self.subTest(argv=argv), self.assertRaises(SystemExit), \
                    contextlib.redirect_stderr(err):
                sweep_synthface.parse_args(argv)
            self.assertIn(said, err.getvalue())
        args = sweep_synthface.parse_args(
            ['--adaface-schedules', '0.5:0.1', '0.1:0.5'])  # either direction
        self.assertEqual(args.adaface_schedules, ['0.5:0.1', '0.1:0.5'])

    def test_segmenter_is_checked_before_any_run(self):
        # Each run failed in its train.log (one JobError traceback) instead.
        import torch

        from oaml_mm.errors import DataFormatError, MissingFileError
        with tempfile.TemporaryDirectory() as tmp:
            def sweep(path):
                args = sweep_synthface.parse_args(
                    ['--models', 'adaface', 'oaml_seg', '--iters', '2',
                     '--work-dir', tmp, '--segmenter', path])
                return sweep_synthface.sweep(args)
            with self.assertRaisesRegex(MissingFileError, 'none.pth'):
                sweep(osp.join(tmp, 'none.pth'))
            other = osp.join(tmp, 'recognizer.pth')
            torch.save({'state_dict': {'backbone.w': torch.zeros(1)}}, other)
            with self.assertRaisesRegex(DataFormatError, 'no "segmenter." '):
                sweep(other)
            self.assertEqual(sorted(os.listdir(tmp)), ['recognizer.pth'])
            # Models that load none do not need it.
            sweep_synthface.check_segmenter(sweep_synthface.parse_args(
                ['--segmenter', osp.join(tmp, 'none.pth')]), ['adaface', 'oaml'])


class TestPixelBaseline(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp()
        generate_synthface(cls.tmp, SynthFaceConfig(
            identities=4, images_per_id=2, test_identities=6, occluded_per_id=1,
            val_images_per_id=4, val_pairs=40, ijbc_subjects=3,
            ijbc_probe_templates=1), workers=1, log=None)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def test_descriptors(self):
        rng = np.random.default_rng(0)
        imgs = rng.integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
        for fn in (pixel.face_descriptor, pixel.band_descriptor):
            d = fn(imgs)
            np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1, atol=1e-9)
        # The band matcher sees nothing outside the periocular band.
        other = imgs.copy()
        other[:, 80:] = 0
        np.testing.assert_allclose(pixel.band_descriptor(other),
                                   pixel.band_descriptor(imgs))
        self.assertFalse(np.allclose(pixel.face_descriptor(other),
                                     pixel.face_descriptor(imgs)))

    def test_best_threshold_accuracy(self):
        y = np.array([True, True, False, False])
        self.assertEqual(pixel.best_threshold_accuracy(
            np.array([0.9, 0.8, 0.1, 0.2]), y), 100.0)
        self.assertEqual(pixel.best_threshold_accuracy(
            np.array([0.1, 0.2, 0.9, 0.8]), y), 50.0)

    def test_evaluate(self):
        res = pixel.evaluate(self.tmp, by_type=True)
        self.assertEqual(set(res), set(pixel.SETS))
        for r in res.values():
            for key in ('face', 'band'):
                self.assertTrue(0 <= r[key] <= 100)
        self.assertEqual(res['clean']['by_type'], {})  # 40 pairs < 60


if __name__ == '__main__':
    unittest.main()


class TestRunCli(unittest.TestCase):

    def test_failures_end_in_one_line(self):
        from oaml_mm.errors import ConfigError

        def fail(exc):
            def main():
                raise exc
            return main

        for exc, msg in ((synthface_runs.JobError('log x'), 'sweep: failed: log x'),
                         (ConfigError('bad --segmenter'), 'sweep: bad --segmenter')):
            with self.subTest(exc=type(exc).__name__), \
                    self.assertRaises(SystemExit) as cm:
                synthface_runs.run_cli(fail(exc), 'sweep:')
            self.assertEqual(str(cm.exception.code), msg)
        with self.assertRaises(ValueError):  # anything else is a bug: traceback
            synthface_runs.run_cli(fail(ValueError('x')), 'sweep:')


class TestSweepReport(unittest.TestCase):

    def test_table_shows_the_adaface_branch(self):
        # The column was once in the header but not in the rows.
        metrics = {}
        for i, s in enumerate(sweep_synthface.VAL_SETS):
            metrics[f'{s}/fused/accuracy'] = 80.0 + i
            metrics[f'{s}/adaface/accuracy'] = 70.0 + i
        r = dict(model='oaml_seg', lr=0.1, warmup=0.3, scale=16.0, sampler='pk',
                 adaface_weight=None, adaface_schedule='0.1:0.7',
                 metrics=metrics, score=81.0, work_dir='w')
        args = sweep_synthface.parse_args(
            ['--models', 'oaml_seg', '--adaface-schedules', '0.1:0.7'])
        with tempfile.TemporaryDirectory() as tmp:
            path = osp.join(tmp, 'sweep.md')
            sweep_synthface.write_report(args, [r], path)
            with open(path) as f:
                rows = f.read().splitlines()
        self.assertEqual(rows[0].count('|'), rows[2].count('|'))
        self.assertIn('| 0.1 : 0.9 -> 0.7 : 0.3 | fused | 80.0 | 81.0 | 82.0 | '
                      '81.0 | 71.0 | yes |', rows[2])
