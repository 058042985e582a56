"""The occlusion study (projects.occlusion_study.occlusion_study): its models'
configs, the run layout and the aims table."""
import contextlib
import io
import json
import os
import os.path as osp
import shutil
import tempfile
import unittest

from oaml_mm.utils import load_config
from projects.occlusion_study import occlusion_study
from projects.occlusion_study import occlusion_study_report as study_report
from projects.occlusion_study import synthface_runs


class TestStudyModels(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp()

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def _cfg(self, model, **kw):
        return load_config(synthface_runs.write_run_config(
            model, osp.join(self.tmp, model), '/data/sf', 40, **kw))

    def test_cleanonly_sees_no_occlusion(self):
        cfg = self._cfg('adaface_cleanonly')
        ds = cfg.train_dataloader.dataset
        self.assertEqual(ds.type, 'MXFaceDataset')
        self.assertEqual(ds.data_root, '/data/sf/train')
        self.assertNotIn('MedicalMaskOcclusion', [t.type for t in ds.pipeline])
        fair = self._cfg('adaface')
        # Everything else is the fair baseline's.
        self.assertEqual(cfg.model, fair.model)
        self.assertEqual(cfg.optim_wrapper, fair.optim_wrapper)
        self.assertEqual(cfg.train_dataloader.sampler,
                         fair.train_dataloader.sampler)
        self.assertIn('MedicalMaskOcclusion', [
            t.type for t in fair.train_dataloader.dataset.datasets[0].pipeline])

    def test_control_uses_no_visibility(self):
        cfg = self._cfg('oaml_novis')
        full = self._cfg('oaml')
        self.assertIsNone(cfg.model.neck)
        self.assertEqual(cfg.model.train_cfg.qaconv_train_vis, 'none')
        self.assertNotIn('DualLoaderHook', [h.type for h in cfg.custom_hooks])
        self.assertIn('DualLoaderHook', [h.type for h in full.custom_hooks])
        # Same backbone, heads, loss weights, batches and test sets.
        for key in ('backbone', 'head', 'qaconv_head', 'loss_weights'):
            self.assertEqual(cfg.model[key], full.model[key], key)
        self.assertEqual(cfg.train_dataloader, full.train_dataloader)
        self.assertEqual(
            [e.dataset_name for e in cfg.test_evaluator],
            [e.dataset_name for e in full.test_evaluator])
        self.assertFalse(any(e.get('visibility_ablation')
                             for e in cfg.test_evaluator))

    def test_ijbc_run_keeps_the_model(self):
        cfg = self._cfg('oaml_novis', ijbc=True, test_data_root='/data/t')
        self.assertIsNone(cfg.model.neck)
        self.assertEqual(cfg.test_evaluator.type, 'IJBMetric')
        self.assertEqual(cfg.test_dataloader.dataset.data_root, '/data/t/ijbc')
        cfg = self._cfg('adaface_cleanonly', ijbc=True)
        self.assertEqual(tuple(cfg.test_evaluator.branches), ('adaface', ))

    def test_unknown_model(self):
        with self.assertRaisesRegex(ValueError, 'unknown SynthFace model'):
            synthface_runs.write_run_config('resnet', self.tmp, '/data/sf')

    def test_trained_runs_are_skipped(self):
        args = occlusion_study.parse_args(
            ['--data', '/data/sf', '--work-dir', self.tmp, '--iters', '40',
             '--seeds', '0', '1', '--models', 'adaface', 'oaml'])
        self.assertEqual(len(occlusion_study.train_jobs(args)), 4)
        wd = occlusion_study.run_dir(self.tmp, 40, 1, 'oaml')
        open(osp.join(wd, 'iter_40.pth'), 'wb').close()
        names = [j['name'] for j in occlusion_study.train_jobs(args)]
        self.assertNotIn('oaml it40 s1', names)
        self.assertEqual(len(names), 3)
        # Only the trained run is evaluated: an OAML model once recalibrated,
        # then once per test part, from the recalibrated checkpoint.
        self.assertEqual([j['name'] for j in occlusion_study.test_jobs(args)], [])
        cal = occlusion_study.calibrate_jobs(args)
        self.assertEqual([j['name'] for j in cal], ['calibrate oaml it40 s1'])
        self.assertIn(osp.join(wd, 'calibrated.pth'), cal[0]['cmd'])
        open(osp.join(wd, 'calibrated.pth'), 'wb').close()
        self.assertEqual(occlusion_study.calibrate_jobs(args), [])
        tests = occlusion_study.test_jobs(args)
        self.assertEqual([j['name'] for j in tests],
                         ['test oaml bins it40 s1', 'test oaml ijbc it40 s1'])
        self.assertIn(osp.join(wd, 'calibrated.pth'), tests[0]['cmd'])

    def _segmenters(self):
        import torch
        paths = []
        for seed in (0, 1):
            paths.append(osp.join(self.tmp, f'seg{seed}.pth'))
            torch.save({'state_dict': {'segmenter.w': torch.zeros(1)}},
                       paths[-1])
        return paths

    def test_segmenter_is_checked_before_any_run(self):
        # Before: a pattern with another placeholder raised KeyError; a
        # recognizer checkpoint was accepted and training failed later in
        # train.log; a directory was "no such file".
        import torch

        from oaml_mm.errors import ConfigError, DataFormatError
        with self.assertRaisesRegex(
                ConfigError, r"^--segmenter '/tmp/seg_\{seed\}_\{x\}.pth': "
                r'\{seed\} is the only placeholder'):
            occlusion_study.segmenter_checkpoints(
                ['/tmp/seg_{seed}_{x}.pth'], [0])
        recognizer = osp.join(self.tmp, 'iter_4.pth')
        torch.save({'state_dict': {'backbone.w': torch.zeros(1)}}, recognizer)
        junk = osp.join(self.tmp, 'junk.pth')
        with open(junk, 'w') as f:
            f.write('not a checkpoint')
        base = ['--data', '/data/sf', '--work-dir', self.tmp, '--iters', '40',
                '--seeds', '0', '--models', 'oaml_seg']
        for path, msg in (
                (recognizer, 'holds no "segmenter." weights'),
                (self.tmp, 'is a directory; expected a checkpoint file'),
                (junk, 'is not a readable checkpoint')):
            args = occlusion_study.parse_args(
                base + ['--segmenter', f'0={path}'])
            with self.subTest(path=path), self.assertRaisesRegex(
                    DataFormatError, f'^{path}: the --segmenter checkpoint of '
                    f'seed 0 {msg}'):
                occlusion_study.train_jobs(args)

    def _neck_checkpoint(self, config):
        return load_config(config).model.neck.init_cfg.checkpoint

    def test_segmenter_of_each_seed_reaches_its_runs(self):
        seg = self._segmenters()
        for spec in ([f'0={seg[0]}', f'1={seg[1]}'],
                     [osp.join(self.tmp, 'seg{seed}.pth')]):
            work = tempfile.mkdtemp(dir=self.tmp)
            args = occlusion_study.parse_args(
                ['--data', '/data/sf', '--work-dir', work, '--iters', '40',
                 '--seeds', '0', '1', '--models', 'oaml_seg', 'oaml',
                 '--segmenter'] + spec)
            jobs = occlusion_study.train_jobs(args)
            self.assertEqual([j['name'] for j in jobs],
                             ['oaml_seg it40 s0', 'oaml it40 s0',
                              'oaml_seg it40 s1', 'oaml it40 s1'])
            self.assertEqual(self._neck_checkpoint(jobs[0]['cmd'][2]), seg[0])
            self.assertEqual(self._neck_checkpoint(jobs[2]['cmd'][2]), seg[1])
            # The head model is untouched.
            self.assertEqual(load_config(jobs[3]['cmd'][2]).model.neck.type,
                             'OcclusionHead')
            # Calibration and tests of a trained run load the same segmenter.
            wd = occlusion_study.run_dir(work, 40, 1, 'oaml_seg')
            open(osp.join(wd, 'iter_40.pth'), 'wb').close()
            cal = occlusion_study.calibrate_jobs(args)
            self.assertEqual([j['name'] for j in cal],
                             ['calibrate oaml_seg it40 s1'])
            self.assertEqual(self._neck_checkpoint(cal[0]['cmd'][2]), seg[1])
            open(osp.join(wd, 'calibrated.pth'), 'wb').close()
            tests = occlusion_study.test_jobs(args)
            self.assertEqual(len(tests), 2)
            for job in tests:
                self.assertEqual(self._neck_checkpoint(job['cmd'][2]), seg[1])

    def test_adaface_schedule_reaches_oaml_runs_only(self):
        args = occlusion_study.parse_args(
            ['--data', '/data/sf', '--work-dir', self.tmp, '--iters', '40',
             '--seeds', '0', '--models', 'adaface', 'oaml_novis',
             '--adaface-schedule', '0.1:0.5'])
        jobs = occlusion_study.train_jobs(args)
        base, control = (load_config(j['cmd'][2]) for j in jobs)
        ramp = [h for h in control.custom_hooks
                if h.type == 'LossWeightScheduleHook']
        self.assertEqual([(h.start, h.end) for h in ramp], [(0.1, 0.5)])
        self.assertNotIn('LossWeightScheduleHook',
                         [h.type for h in base.custom_hooks])
        for argv in (['--adaface-schedule', '0.5:x'],
                     ['--models', 'adaface', '--adaface-schedule', '0.1:0.5']):
            with self.subTest(argv=argv), self.assertRaises(SystemExit):
                occlusion_study.parse_args(argv)

    def test_trained_run_of_another_split_is_not_reused(self):
        from oaml_mm.errors import ConfigError

        def args(*extra):
            return occlusion_study.parse_args(
                ['--data', '/data/sf', '--work-dir', self.tmp, '--iters', '40',
                 '--seeds', '0', '--models', 'adaface', 'oaml_novis', *extra])
        occlusion_study.train_jobs(args())  # writes the run configs
        for model in ('adaface', 'oaml_novis'):
            open(osp.join(occlusion_study.run_dir(self.tmp, 40, 0, model),
                          'iter_40.pth'), 'wb').close()
        # The config's split, asked implicitly or by value: reused.
        self.assertEqual(occlusion_study.train_jobs(args()), [])
        self.assertEqual(occlusion_study.train_jobs(
            args('--adaface-schedule', '0.1')), [])
        # Another split would be reported as trained with it: refused.
        with self.assertRaisesRegex(
                ConfigError, r'oaml_novis holds a run trained with the AdaFace '
                r': QAConv split 0\.1 : 0\.9 .*asks for 0\.1 : 0\.9 -> 0\.5 : 0\.5'):
            occlusion_study.train_jobs(args('--adaface-schedule', '0.1:0.5'))
        self.assertEqual(synthface_runs.config_split(load_config(
            synthface_runs.CONFIGS['oaml_seg_sched'])), (0.1, 0.5))
        # --stages test alone (calibrations, evaluations) checks it too.
        for make in (occlusion_study.calibrate_jobs, occlusion_study.test_jobs):
            with self.assertRaisesRegex(ConfigError, 'oaml_novis holds a run '
                                        'trained with'):
                make(args('--adaface-schedule', '0.1:0.5'))
        self.assertEqual(len(occlusion_study.calibrate_jobs(args())), 1)
        # A damaged run config (no loss split): one ConfigError naming it.
        wd = occlusion_study.run_dir(self.tmp, 40, 0, 'oaml_novis')
        written, = [f for f in os.listdir(wd) if f.endswith('_run.py')]
        with open(osp.join(wd, written), 'w') as f:
            f.write('x = 1\n')
        with self.assertRaisesRegex(ConfigError, f'{written}: no AdaFace loss'):
            occlusion_study.train_jobs(args())
        # A trained run copied in without its run config: its split cannot be
        # told, so it is not reported as the asked one.
        os.remove(osp.join(wd, written))
        for make in (occlusion_study.train_jobs, occlusion_study.test_jobs):
            with self.assertRaisesRegex(ConfigError, 'trained run without its '
                                        f'run config .*{written}'):
                make(args('--adaface-schedule', '0.1:0.7'))

    def test_segmenter_must_be_given(self):
        from oaml_mm.errors import ConfigError, MissingFileError
        seg = self._segmenters()
        base = ['--data', '/data/sf', '--work-dir', self.tmp, '--iters', '40',
                '--models', 'oaml_seg', 'adaface']
        args = occlusion_study.parse_args(
            base + ['--seeds', '0', '1', '--segmenter', f'0={seg[0]}'])
        with self.assertRaisesRegex(ConfigError, r'seed 1\).*--segmenter 1='):
            occlusion_study.train_jobs(args)
        args = occlusion_study.parse_args(
            base + ['--seeds', '0', '--segmenter', f'0={seg[0]}.missing'])
        with self.assertRaises(MissingFileError):
            occlusion_study.train_jobs(args)
        for bad in (['0'], [seg[0]], ['x=' + seg[0]],
                    [f'0={seg[0]}', f'0={seg[1]}']):
            with self.assertRaises(ConfigError, msg=str(bad)):
                occlusion_study.segmenter_checkpoints(bad, [0])
        # A model without a segmenter takes none.
        with self.assertRaisesRegex(ValueError, 'OcclusionSegmenter'):
            synthface_runs.write_run_config('oaml', self.tmp, '/data/sf',
                                            segmenter=seg[0])
        self.assertTrue(synthface_runs.reads_segmenter('oaml_seg'))
        self.assertFalse(synthface_runs.reads_segmenter('oaml'))

    def test_segmenter_model_is_evaluated_as_oaml(self):
        seg = self._segmenters()[0]
        cfg = self._cfg('oaml_seg', segmenter=seg)
        full = self._cfg('oaml')
        self.assertEqual(synthface_runs.FAMILY['oaml_seg'], 'oaml')
        self.assertEqual(cfg.model.neck.type, 'OcclusionSegmenter')
        self.assertTrue(cfg.model.neck.frozen)
        self.assertEqual(cfg.model.neck.init_cfg.checkpoint, seg)
        self.assertEqual(cfg.segmenter_checkpoint, seg)
        # Trained as OAML (QAConv on true masks), evaluated on the same sets by
        # the same metrics: fused_vis, the QAConv visibility ablation, the MAE.
        self.assertEqual(cfg.model.train_cfg.qaconv_train_vis, 'gt')
        for key in ('backbone', 'head', 'qaconv_head', 'loss_weights'):
            self.assertEqual(cfg.model[key], full.model[key], key)
        self.assertEqual(cfg.train_dataloader, full.train_dataloader)
        self.assertEqual(cfg.test_evaluator, full.test_evaluator)
        self.assertTrue(all(e.visibility_ablation for e in cfg.test_evaluator))
        self.assertEqual(cfg.test_dataloader, full.test_dataloader)
        ijbc = self._cfg('oaml_seg', segmenter=seg, ijbc=True)
        self.assertEqual(ijbc.test_evaluator,
                         self._cfg('oaml', ijbc=True).test_evaluator)


class TestStudyReport(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp()

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def _write(self, model, seed, acc, fused_vis=None):
        wd = osp.join(self.tmp, 'it50', f'seed{seed}', model)
        os.makedirs(wd)
        branch = synthface_runs.MAIN_BRANCH[synthface_runs.FAMILY[model]]
        m = {}
        for prefix, _, group in study_report.ROWS:
            m[f'{prefix}/{branch}/accuracy'] = acc[group]
            if branch == 'fused':  # OAML's files hold every branch
                m[f'{prefix}/qaconv/accuracy'] = acc[group] - 1.0
            if fused_vis is not None:
                m[f'{prefix}/fused_vis/accuracy'] = fused_vis[group]
        with open(osp.join(wd, 'test_bins.json'), 'w') as f:
            json.dump(m, f)
        with open(osp.join(wd, 'test_ijbc.json'), 'w') as f:
            ijbc = {f'ijbc/{branch}/TAR@FAR=1e-03': 40.0 + seed}
            if model == 'oaml':
                ijbc[f'ijbc/{branch}_vispool/TAR@FAR=1e-03'] = 45.0 + seed
            json.dump(ijbc, f)

    def test_aims(self):
        base = dict(clean=90.0, occluded=70.0, heldout_clean=85.0,
                    heldout_occluded=60.0)
        self._write('adaface', 0, base)
        self._write('adaface', 1, {k: v + 2 for k, v in base.items()})
        self._write('oaml_novis', 0, {**base, 'heldout_occluded': 63.0})
        self._write('oaml_novis', 1, {**base, 'heldout_occluded': 63.0})
        # OAML: +6 / +4 on held-out occluded pairs over seeds 0 and 1 (mean +5),
        # +2 over the control; clean 1.5 below the fair baseline on average.
        self._write('oaml', 0, dict(clean=89.0, occluded=77.0, heldout_clean=85.0,
                                    heldout_occluded=66.0),
                    fused_vis=dict(clean=90.0, occluded=78.0,
                                   heldout_clean=86.0, heldout_occluded=68.0))
        self._write('oaml', 1, dict(clean=90.0, occluded=77.0, heldout_clean=88.0,
                                    heldout_occluded=66.0))
        table = study_report.study_table(
            self.tmp, ['adaface', 'oaml_novis', 'oaml'], [50], [0, 1])
        # The study's report stage writes the same table.
        out = osp.join(self.tmp, 'results.md')
        with contextlib.redirect_stdout(io.StringIO()):
            occlusion_study.main(
                ['--work-dir', self.tmp, '--stages', 'report', '--iters', '50',
                 '--seeds', '0', '1', '--models', 'adaface', 'oaml_novis',
                 'oaml', '--out', out])
        with open(out) as f:
            self.assertEqual(f.read(), table + '\n')
        rows = {line.split(' | ')[0]: line for line in table.splitlines()
                if line.startswith('| oaml')}
        cells = rows['| oaml'].split(' | ')[1:]
        # heldout vs fair, heldout vs control, occluded vs fair, clean, heldout clean
        self.assertEqual([c.strip(' |') for c in cells],
                         ['+5.0 ✓', '+3.0 ✓', '+6.0 ✓', '-1.5 ✗', '+0.5 ✓'])
        # fused_vis exists for one seed only: judged on that seed.
        cells = rows['| oaml +vis-fusion'].split(' | ')[1:]
        self.assertEqual(cells[0].strip(), '+8.0 ✓ (1 of 2 seeds)')
        # The control is judged by the same score as the OAML model it is
        # compared with: it has no fused_vis here.
        self.assertEqual(cells[1].strip(), 'n/a')
        self.assertIn('heldout occluded vs its no-awareness control (same loss '
                      'split) (aim ≥ +3)', table)
        self.assertIn('| mini IJB-C | 40.5 ± 0.7 |', table)
        self.assertIn('| mini IJB-C, visibility-weighted templates | n/a | n/a | '
                      '45.5 ± 0.7 | n/a |', table)
        self.assertIn('| SynthFace clean–occluded | 71.0 ± 1.4 |', table)
        head = study_report.headline_table(self.tmp, [50], [0, 1])
        self.assertIn('| pairs | seed-style AdaFace, 50 it | fair AdaFace, 50 it | '
                      'control, 50 it | OAML, 50 it |', head)
        # OAML by its fused_vis (seed 0 only), the fair baseline by its cosine.
        self.assertIn('| held-out occluded–occluded | n/a | 61.0 ± 1.4 | n/a | '
                      '68.0 |', head)

    def _write_all(self, model, seed, values):
        """Every row's metrics: ``values`` maps a branch to its accuracy."""
        wd = osp.join(self.tmp, 'it50', f'seed{seed}', model)
        os.makedirs(wd)
        m = {}
        for prefix, _, _ in study_report.ROWS:
            for branch, v in values.items():
                key = (f'{prefix}/visibility/MAE' if branch == 'mae' else
                       f'{prefix}/{branch}/accuracy')
                m[key] = v + (0 if branch == 'mae' else 10 * (prefix == 'clean'))
        with open(osp.join(wd, 'test_bins.json'), 'w') as f:
            json.dump(m, f)

    def test_predictor_table(self):
        for seed in (0, 1):
            self._write_all('adaface', seed, dict(adaface=70.0 + 2 * seed))
            self._write_all('oaml_novis', seed,
                            dict(fused=71.0, fused_vis=72.0 + seed, qaconv=70.0))
            self._write_all('oaml_seg', seed, dict(
                fused=74.0, fused_vis=75.0 + 3 * seed, qaconv=73.0 + seed,
                qaconv_gt_vis=74.0, qaconv_no_vis=71.0, mae=0.1 + 0.02 * seed))
        # The reference OAML model exists for seed 0 only.
        self._write_all('oaml', 0, dict(fused=73.0, fused_vis=73.5))
        with contextlib.redirect_stderr(io.StringIO()):
            table = study_report.predictor_table(self.tmp, 'oaml_seg', 50, [0, 1])
        rows = {line.split(' | ')[0]: [c.strip(' |') for c in
                                       line.split(' | ')[1:]]
                for line in table.splitlines() if line.startswith('| ')}
        self.assertEqual(len(rows['| pairs']), 13)
        self.assertEqual(rows['| pairs'][2], 'oaml fused_vis')
        self.assertEqual(rows['| held-out occluded–occluded'], [
            '71.0 ± 1.4',  # baseline 70, 72
            '72.5 ± 0.7',  # control fused_vis 72, 73
            '73.5',  # reference, one seed
            '74.0 ± 0.0', '76.5 ± 2.1',  # fused; fused_vis 75, 78
            '+5.5 ± 0.7',  # fused_vis - baseline within a seed: +5, +6
            '+4.0 ± 1.4',  # - control: +3, +5
            '73.5 ± 0.7', '74.0 ± 0.0', '71.0 ± 0.0',  # QAConv pred / true / none
            '-0.5 ± 0.7', '+2.5 ± 0.7',  # pred - true, pred - none
            '0.110 ± 0.014'])
        self.assertEqual(rows['| SynthFace clean–clean'][0], '81.0 ± 1.4')
        # Without runs of the reference model its column is left out.
        with contextlib.redirect_stderr(io.StringIO()):
            table = study_report.predictor_table(self.tmp, 'oaml_seg', 50, [0, 1],
                                                 reference='oaml_visemb')
        self.assertNotIn('oaml_visemb', table)
        self.assertIn('| pairs | fair AdaFace baseline (cosine) | control fused_vis '
                      '| oaml segmenter fused |', table)
        with self.assertRaisesRegex(ValueError, 'no-awareness control'):
            study_report.predictor_table(self.tmp, 'adaface', 50, [0, 1])

    def test_control_at_the_same_loss_split(self):
        base = dict(clean=90.0, occluded=70.0, heldout_clean=85.0,
                    heldout_occluded=60.0)
        for seed in (0, 1):
            self._write('adaface', seed, base)
            self._write('oaml_novis', seed, {**base, 'heldout_occluded': 61.0})
            self._write('oaml_novis_ada05', seed,
                        {**base, 'heldout_occluded': 64.0})
            for model in ('oaml_ada05', 'oaml_ada03'):
                self._write(model, seed, {**base, 'heldout_occluded': 65.0})
        models = ['adaface', 'oaml_novis', 'oaml_novis_ada05', 'oaml_ada05',
                  'oaml_ada03']
        table = study_report.study_table(self.tmp, models, [50], [0, 1])
        rows = {line.split(' | ')[0]: line.split(' | ')[1:]
                for line in table.splitlines()
                if line.startswith(('| oaml', '| no-awareness'))}
        # Each model against the control at its own split (0.5 : 0.5: +1, not the
        # +4 the 0.1 : 0.9 control would give); none at 0.3 : 0.7.
        self.assertEqual(rows['| oaml AdaFace 0.5'][1].strip(), '+1.0 ✗')
        self.assertEqual(rows['| oaml AdaFace 0.3'][1].strip(), 'n/a')
        self.assertEqual(rows['| oaml AdaFace 0.3'][0].strip(), '+5.0 ✓')
        # A control is a row of its own (its lead over the baseline is what the
        # QAConv loss and P x K batches earn), with no control of its own.
        self.assertEqual(rows['| no-awareness control AdaFace 0.5'][:2],
                         ['+4.0 ✗', 'n/a'])
        # Without the 0.1 : 0.9 control the column stays for the models that have
        # theirs.
        table = study_report.study_table(
            self.tmp, ['adaface', 'oaml_novis_ada05', 'oaml_ada05'], [50], [0, 1])
        row = [line for line in table.splitlines()
               if line.startswith('| oaml AdaFace 0.5 |')][0]
        self.assertEqual(row.split(' | ')[2].strip(), '+1.0 ✗')
        # A control seed missing: the lead is marked as standing on one seed.
        shutil.rmtree(osp.join(self.tmp, 'it50', 'seed1', 'oaml_novis_ada05'))
        table = study_report.study_table(
            self.tmp, ['adaface', 'oaml_novis_ada05', 'oaml_ada05'], [50], [0, 1])
        row = [line for line in table.splitlines()
               if line.startswith('| oaml AdaFace 0.5 |')][0]
        self.assertEqual(row.split(' | ')[2].strip(), '+1.0 ✗ (1 of 2 seeds)')

    def test_bad_metrics_files(self):
        base = dict(clean=90.0, occluded=70.0, heldout_clean=85.0,
                    heldout_occluded=60.0)
        self._write('adaface', 0, base)
        self._write('oaml', 0, base)
        bins = osp.join(self.tmp, 'it50', 'seed0', 'oaml', 'test_bins.json')
        good = open(bins).read()
        for text, msg in (('[1, 2]', 'not a tools/test.py --out metrics file'),
                          ('{"clean/fused/accuracy": "abc"}',
                           'not a tools/test.py --out metrics file'),
                          # the AdaFace baseline's file in OAML's folder
                          (open(bins.replace('oaml', 'adaface')).read(),
                           "no 'fused' scores")):
            with self.subTest(text=text[:30]):
                with open(bins, 'w') as f:
                    f.write(text)
                with self.assertRaises(SystemExit) as cm:
                    study_report.study_table(self.tmp, ['adaface', 'oaml'], [50],
                                             [0])
                self.assertIn(bins, str(cm.exception))
                self.assertIn(msg, str(cm.exception))
        # OAML's file in the baseline's folder
        with open(bins.replace('oaml', 'adaface'), 'w') as f:
            f.write(good)
        with self.assertRaisesRegex(SystemExit, "OAML model's metrics file"):
            study_report.study_table(self.tmp, ['adaface'], [50], [0])


class TestLastCheckpoint(unittest.TestCase):

    def test_latest_iteration_not_newest_file(self):
        # Without last_checkpoint the newest *.pth by time was evaluated:
        # after cp -r that is copy order, and a nonfinite_iter_N.pth is newer.
        import torch

        from oaml_mm.utils import atomic_save
        with tempfile.TemporaryDirectory() as tmp:
            for i, (name, it) in enumerate((('iter_8.pth', 8),
                                            ('iter_4.pth', 4),
                                            ('nonfinite_iter_9.pth', 9))):
                path = osp.join(tmp, name)
                atomic_save({'state_dict': {'w': torch.zeros(2)},
                             'meta': {'iter': it}}, path)
                os.utime(path, (1e9 + i, 1e9 + i))
            self.assertEqual(synthface_runs.last_checkpoint(tmp),
                             osp.join(tmp, 'iter_8.pth'))
            for name in os.listdir(tmp):
                os.remove(osp.join(tmp, name))
            with self.assertRaisesRegex(synthface_runs.JobError,
                                        'wrote no checkpoint'):
                synthface_runs.last_checkpoint(tmp)


if __name__ == '__main__':
    unittest.main()
