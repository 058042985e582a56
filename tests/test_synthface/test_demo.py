"""tools/demo.py end to end on a tiny SynthFace: generate, train both models side by
side, evaluate with tools/test.py (.bin sets with the ablation, mini IJB-C), table.

A handful of iterations: this checks the machinery (configs, subprocesses, metric
keys, the table), not the accuracy the README reports.
"""
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import tempfile
import unittest

from projects.occlusion_study import synthface_report, synthface_runs

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

TINY = ('identities=8 images_per_id=4 test_identities=6 occluded_per_id=2 '
        'val_images_per_id=4 val_pairs=40 ijbc_subjects=3 '
        'ijbc_probe_templates=1')


class TestDemo(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp()
        cls.work = osp.join(cls.tmp, 'work')
        cls.proc = subprocess.run(
            [sys.executable, osp.join(ROOT, 'tools', 'demo.py'), '--data',
             osp.join(cls.tmp, 'sf'), '--work-dir', cls.work, '--iters', '3',
             '--synthface-args', TINY],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
            env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep +
                     os.environ.get('PYTHONPATH', '')))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def test_runs_and_prints_the_table(self):
        out = self.proc.stdout + self.proc.stderr
        self.assertEqual(self.proc.returncode, 0, out[-3000:])
        for step in ('1/4', '2/4', '3/4', '4/4'):
            self.assertIn(f'[demo] {step}', out)
        self.assertIn('| occluded-occluded |', out)
        self.assertIn('mini IJB-C TAR@FAR=1e-02', out)
        # Progress lines name both models while they train.
        self.assertRegex(out, r'adaface s0 .*\| oaml s0')

    def test_every_number_of_the_table_is_measured(self):
        with open(osp.join(self.work, 'results.json')) as f:
            res = json.load(f)['0']
        ada, oaml = res['adaface'], res['oaml']
        for s in ('clean', 'masked', 'occluded'):
            self.assertIn(f'{s}/adaface/accuracy', ada)
            self.assertNotIn(f'{s}/qaconv/accuracy', ada)
            for b in ('adaface', 'qaconv', 'fused', 'qaconv_gt_vis',
                      'qaconv_no_vis'):
                self.assertIn(f'{s}/{b}/accuracy', oaml)
        for key in ('occluded/visibility/MAE_niqab', 'clean/visibility/MAE'):
            self.assertTrue(0.0 <= oaml[key] <= 1.0, key)
        self.assertIn('ijbc/fused/TAR@FAR=1e-01', oaml)
        self.assertIn('ijbc/adaface/TAR@FAR=1e-01', ada)
        with open(osp.join(self.work, 'results.md')) as f:
            table = f.read()
        self.assertNotIn('n/a', table)
        # The fixed budget reached the run config.
        cfg = osp.join(self.work, 'seed0', 'oaml',
                       'oaml_ir18_synthface_run.py')
        with open(cfg) as f:
            self.assertIn('max_iters=3', f.read().replace(' ', ''))

    def test_checkpoints_carry_thresholds(self):
        # Calibrated on val/calib.bin (val_pairs=40), no test set; the OAML
        # model predicts visibility, so the visibility-aware fusion is fitted.
        from oaml_mm.utils import safe_load_checkpoint
        for model, branches in (('adaface', {'adaface'}),
                                ('oaml', {'adaface', 'qaconv', 'fused',
                                          'fused_vis'})):
            ckpt = synthface_runs.last_checkpoint(
                osp.join(self.work, 'seed0', model))
            cal = safe_load_checkpoint(ckpt)['meta']['oaml_thresholds']
            self.assertEqual((cal['far'], cal['source'], cal['num_pairs']),
                             (1e-3, 'calib', 40), model)
            self.assertEqual(set(cal['branches']), branches, model)


class TestReport(unittest.TestCase):

    def test_mean_and_spread(self):
        keys = {'clean/adaface/accuracy': 90.0, 'clean/fused/accuracy': 90.0,
                'occluded/visibility/MAE_niqab': 0.25}
        a = [dict(keys), {k: v + 2 for k, v in keys.items()}]
        table = synthface_report.comparison_table(a, a)
        self.assertIn('mean ± s.d. over 2 seeds', table)
        self.assertIn('91.0 ± 1.4', table)          # s.d. of (90, 92)
        self.assertIn('| clean-clean | 91.0 ± 1.4 |', table)
        self.assertIn('| 91.0 ± 1.4 | 0.0 ± 0.0 |', table)  # fused − baseline
        self.assertIn('| 1.250 ± 1.414 |', table)     # MAE, 3 digits
        self.assertIn('n/a', table)                  # missing keys say so

    def test_heldout_rows_and_family_mae(self):
        run = {'heldout_masked/adaface/accuracy': 70.0,
               'heldout_masked/fused/accuracy': 75.0,
               'heldout_occluded/qaconv_no_vis/accuracy': 60.0,
               'heldout_occluded/qaconv/accuracy': 64.0,
               'heldout_occluded/visibility/MAE_eye_band': 0.125,
               'heldout_occluded/visibility/MAE': 0.1}
        table = synthface_report.comparison_table([run], [run])
        self.assertIn('| held-out clean-heldout-occluded | 70.0 | 70.0 | n/a | '
                      '75.0 | 5.0 |', table)
        self.assertIn('| held-out occluded-occluded | 64.0 | n/a | 60.0 | 4.0 |',
                      table)
        mae = [ln for ln in table.splitlines() if ln.startswith('| object |')]
        self.assertEqual(len(mae), 1)
        self.assertIn('| n/a | n/a | 0.125 | n/a | n/a | 0.100 | n/a |', table)

    def test_a_new_occluder_type_gets_a_column(self):
        # The per-type columns are the generator's types, then any other the
        # data's side files named (the metric keys them by name).
        run = {'occluded/visibility/MAE_niqab': 0.25,
               'occluded/visibility/MAE_visor': 0.5,
               'heldout_occluded/visibility/MAE_cap': 0.125}
        table = synthface_report.comparison_table([run], [run])
        self.assertIn('| niqab | medical_mask | scarf | hand | sunglasses | '
                      'visor | all occluded | clean |', table)
        self.assertIn('| 0.250 | n/a | n/a | n/a | n/a | 0.500 | n/a | n/a |',
                      table)
        self.assertIn('| hand_alt | cap | all held-out occluded |', table)

    def test_progress_parser(self):
        log = osp.join(tempfile.mkdtemp(), 'train.log')
        with open(log, 'w') as f:
            f.write('x Iter(train) [ 10/700]  lr: 1\ny Iter(train) [ 35/700] '
                    'lr: 1\n')
        self.assertEqual(synthface_runs.train_progress(log), (35, 700))


if __name__ == '__main__':
    unittest.main()
