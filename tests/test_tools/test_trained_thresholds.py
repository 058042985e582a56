"""A model trained like the demo (SynthFace config, validation at the end) decides
same/different out of the box: its checkpoint carries calibrated thresholds."""
import contextlib
import io
import os.path as osp
import subprocess
import sys
import tempfile
import unittest

from oaml_mm.apis import FaceRecognizer
from oaml_mm.datasets.verification_bin import load_verification_bin
from oaml_mm.utils import safe_load_checkpoint

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools'))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import infer  # noqa: E402
import synthface_runs as runs  # noqa: E402


class TestTrainedThresholds(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        from oaml_mm.synthface import SynthFaceConfig, generate_synthface
        cls.tmp = tempfile.TemporaryDirectory()
        cls.data = osp.join(cls.tmp.name, 'sf')
        generate_synthface(cls.data, SynthFaceConfig(
            identities=8, images_per_id=4, test_identities=6,
            occluded_per_id=1, val_images_per_id=4, val_pairs=40,
            ijbc_subjects=3, ijbc_probe_templates=1), workers=1, log=None)
        # Exactly what tools/demo.py writes and runs, at 2 iterations.
        cls.work = osp.join(cls.tmp.name, 'oaml')
        cfg = runs.write_run_config('oaml', cls.work, cls.data, max_iters=2)
        proc = subprocess.run(runs.train_command(cfg, cls.work), cwd=ROOT,
                              env=runs.thread_env(),
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        cls.log = proc.stdout + proc.stderr

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_checkpoint_holds_thresholds_and_compare_decides(self):
        ckpt = runs.last_checkpoint(self.work)
        cal = safe_load_checkpoint(ckpt)['meta']['oaml_thresholds']
        self.assertEqual(cal['far'], 1e-3)
        self.assertEqual(cal['source'], 'clean+masked')
        self.assertEqual(cal['num_pairs'], 80)
        # The model predicts visibility: the visibility-aware fusion is fitted
        # on the calibration pairs and decides.
        self.assertEqual(cal['decision_branch'], 'fused_vis')
        self.assertEqual(set(cal['branches']),
                         {'adaface', 'qaconv', 'fused', 'fused_vis'})
        self.assertEqual(cal['vis_fusion']['num_pairs'], 80)
        for v in cal['branches'].values():
            self.assertLessEqual(v['far'], 1e-3)
        self.assertIn('thresholds at FAR=0.001 on clean+masked', self.log)

        rec = FaceRecognizer.from_work_dir(self.work)
        self.assertEqual(rec.decision_branch, 'fused_vis')
        self.assertEqual(rec.thresholds['fused_vis'],
                         cal['branches']['fused_vis']['threshold'])
        # Two faces of the calibration set, written as files a user would have.
        images, _ = load_verification_bin(osp.join(self.data, 'val',
                                                   'clean.bin'))
        paths = []
        for i in (0, 1):
            paths.append(osp.join(self.tmp.name, f'{i}.png'))
            with open(paths[-1], 'wb') as f:
                f.write(images[i])
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = infer.main(['compare', *paths, '--work-dir', self.work])
        self.assertEqual(code, 0, err.getvalue())
        res = rec.compare(*paths)
        verdict = 'SAME' if res['same'] else 'DIFFERENT'
        self.assertRegex(
            out.getvalue(), rf'{verdict} person \(fused_vis -?\d+\.\d+ [<>]=? '
            r'threshold -?\d+\.\d+, log-odds of the visibility-aware fusion; '
            r'threshold calibrated at '
            r'FAR=0\.001 on clean\+masked\)')
        self.assertNotIn('decision unknown', out.getvalue())

    def test_test_tool_reports_the_checkpoints_visibility_fusion(self):
        ckpt = runs.last_checkpoint(self.work)
        out = osp.join(self.tmp.name, 'test', 'metrics.json')
        test_dir = osp.join(self.tmp.name, 'test')
        cfg = runs.write_run_config('oaml', test_dir, self.data, max_iters=2)
        proc = subprocess.run(runs.test_command(cfg, ckpt, test_dir, out),
                              cwd=ROOT, env=runs.thread_env(),
                              capture_output=True, text=True, timeout=600)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        metrics = runs.read_metrics(out)
        for name in ('clean', 'masked', 'occluded'):
            for k in ('accuracy', 'threshold_fused_vis', 'AUC', 'EER'):
                self.assertIn(f'{name}/fused_vis/{k}', metrics)
            self.assertTrue(0 <= metrics[f'{name}/fused_vis/accuracy'] <= 100)


if __name__ == '__main__':
    unittest.main()
