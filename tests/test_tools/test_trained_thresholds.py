"""A model trained like the demo (SynthFace config, validation at the end on the
calibration split ``val/calib.bin``) decides same/different out of the box: its
checkpoint carries calibrated thresholds; ``tools/calibrate.py`` recalibrates it."""
import contextlib
import io
import os
import os.path as osp
import re
import subprocess
import sys
import tempfile
import unittest

import torch

from oaml_mm.apis import FaceRecognizer
from oaml_mm.datasets.verification_bin import load_verification_bin
from oaml_mm.utils import safe_load_checkpoint
from oaml_mm.utils.checkpoint import atomic_save

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools'))
import calibrate  # noqa: E402
import infer  # noqa: E402

from projects.occlusion_study import synthface_runs as runs  # noqa: E402

_FIXTURE = {}


def setUpModule():
    """One tiny SynthFace and one 2-iteration OAML model for every test here."""
    from oaml_mm.synthface import SynthFaceConfig, generate_synthface
    tmp = tempfile.TemporaryDirectory()
    data = osp.join(tmp.name, 'sf')
    # calib_identities defaults to min(test_identities, 100): val/calib.bin is
    # written, with val_pairs pairs.
    generate_synthface(data, SynthFaceConfig(
        identities=8, images_per_id=4, test_identities=6,
        occluded_per_id=1, val_images_per_id=4, val_pairs=40,
        ijbc_subjects=3, ijbc_probe_templates=1), workers=1, log=None)
    assert osp.isfile(osp.join(data, 'val', 'calib.bin'))
    # Exactly what tools/demo.py writes and runs, at 2 iterations.
    work = osp.join(tmp.name, 'oaml')
    cfg = runs.write_run_config('oaml', work, data, max_iters=2)
    proc = subprocess.run(runs.train_command(cfg, work), cwd=ROOT,
                          env=runs.thread_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _FIXTURE.update(tmp=tmp, data=data, work=work, config=cfg,
                    log=proc.stdout + proc.stderr)


def tearDownModule():
    _FIXTURE.pop('tmp').cleanup()


class _Trained(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = _FIXTURE['tmp']
        cls.data, cls.work = _FIXTURE['data'], _FIXTURE['work']
        cls.config, cls.log = _FIXTURE['config'], _FIXTURE['log']


class TestTrainedThresholds(_Trained):

    def test_checkpoint_holds_thresholds_and_compare_decides(self):
        ckpt = runs.last_checkpoint(self.work)
        cal = safe_load_checkpoint(ckpt)['meta']['oaml_thresholds']
        self.assertEqual(cal['far'], 1e-3)
        # Calibrated on val/calib.bin only (val_pairs=40), no test set.
        self.assertEqual(cal['source'], 'calib')
        self.assertEqual(cal['num_pairs'], 40)
        # The model predicts visibility: the visibility-aware fusion is fitted
        # on the calibration pairs and decides.
        self.assertEqual(cal['decision_branch'], 'fused_vis')
        self.assertEqual(set(cal['branches']),
                         {'adaface', 'qaconv', 'fused', 'fused_vis'})
        self.assertEqual(cal['vis_fusion']['num_pairs'], 40)
        self.assertEqual(cal['vis_fusion']['source'], 'calib')
        for v in cal['branches'].values():
            self.assertLessEqual(v['far'], 1e-3)
        self.assertIn('thresholds at FAR=0.001 on calib:', self.log)

        rec = FaceRecognizer.from_work_dir(self.work)
        self.assertEqual(rec.decision_branch, 'fused_vis')
        self.assertEqual(rec.thresholds['fused_vis'],
                         cal['branches']['fused_vis']['threshold'])
        # Two faces of the calibration set, written as files a user would have.
        images, _ = load_verification_bin(osp.join(self.data, 'val',
                                                   'calib.bin'))
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
            r'FAR=0\.001 on calib\)')
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


class TestCalibrateTool(_Trained):
    """tools/calibrate.py: recalibrate a trained checkpoint, weights untouched."""

    def _run(self, *argv):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            calibrate.main([str(a) for a in argv])
        return out.getvalue()

    def _copy(self, name, drop_calibration=False):
        ckpt = safe_load_checkpoint(runs.last_checkpoint(self.work),
                                    decode=False)
        if drop_calibration:
            del ckpt['meta']['oaml_thresholds']
        path = osp.join(self.tmp.name, name)
        atomic_save(ckpt, path)
        return path

    def _assert_same_weights(self, a, b):
        sa = safe_load_checkpoint(a)['state_dict']
        sb = safe_load_checkpoint(b)['state_dict']
        self.assertEqual(list(sa), list(sb))
        for k in sa:
            self.assertTrue(torch.equal(sa[k], sb[k]), k)

    def test_out_recalibrates_on_calib_and_keeps_the_weights(self):
        src = runs.last_checkpoint(self.work)
        trained = safe_load_checkpoint(src)
        before = osp.getmtime(src), trained['meta']['oaml_thresholds']
        out = osp.join(self.tmp.name, 'calibrated.pth')
        printed = self._run(self.config, src, '--out', out, '--work-dir',
                            osp.join(self.tmp.name, 'cal_out'))
        self.assertEqual((osp.getmtime(src), safe_load_checkpoint(src)[
            'meta']['oaml_thresholds']), before)  # --out: source untouched
        self._assert_same_weights(src, out)
        new = safe_load_checkpoint(out)
        cal = new['meta']['oaml_thresholds']
        self.assertEqual((cal['source'], cal['far'], cal['num_pairs']),
                         ('calib', 1e-3, 40))
        self.assertEqual(set(cal['branches']),
                         {'adaface', 'qaconv', 'fused', 'fused_vis'})
        self.assertEqual(cal['decision_branch'], 'fused_vis')
        self.assertEqual(cal['vis_fusion']['source'], 'calib')
        # The trained model's counters, not those of the validation-only run.
        self.assertEqual((cal['iter'], cal['epoch']),
                         (trained['meta']['iter'], trained['meta']['epoch']))
        self.assertEqual(cal['iter'], 2)
        # Same weights, same pairs: the thresholds of training's calibration.
        old = before[1]
        for b, v in cal['branches'].items():
            self.assertAlmostEqual(v['threshold'],
                                   old['branches'][b]['threshold'], places=4)
        # The rest of the checkpoint's meta is kept.
        self.assertEqual(set(new['meta']), set(trained['meta']))
        self.assertEqual(new['meta'].get('cfg'), trained['meta'].get('cfg'))
        self.assertRegex(
            printed, r'calibrated on calib at FAR=0\.001 \(decision: '
            r'fused_vis\): adaface -?[\d.e-]+, qaconv .*fused_vis .*; '
            r'written to ' + re.escape(out))

    def test_in_place_writes_the_calibration(self):
        path = self._copy('inplace.pth', drop_calibration=True)
        self.assertNotIn('oaml_thresholds', safe_load_checkpoint(path)['meta'])
        self._run(self.config, path, '--work-dir',
                  osp.join(self.tmp.name, 'cal_inplace'),
                  '--cfg-options', 'default_hooks.threshold_calibration.far=0.1')
        cal = safe_load_checkpoint(path)['meta']['oaml_thresholds']
        self.assertEqual((cal['source'], cal['far']), ('calib', 0.1))
        self.assertIn('fused_vis', cal['branches'])
        for v in cal['branches'].values():
            self.assertLessEqual(v['far'], 0.1)
        self._assert_same_weights(runs.last_checkpoint(self.work), path)

    def test_needs_no_training_data(self):
        # Before: the calibration hook's runner.iter built the training loop,
        # and "data/synthface/train/train.rec: no such file" stopped it.
        path = self._copy('notrain.pth')
        missing = osp.join(self.tmp.name, 'no_training_data')
        printed = self._run(
            self.config, path, '--work-dir',
            osp.join(self.tmp.name, 'cal_notrain'), '--cfg-options',
            f'data_root={missing}', f'occlusion_data_root={missing}',
            f'val_data_root={self.data}')
        self.assertIn('calibrated on calib', printed)
        self.assertFalse(osp.exists(missing))
        cal = safe_load_checkpoint(path)['meta']['oaml_thresholds']
        self.assertEqual((cal['source'], cal['iter']), ('calib', 2))

    def test_api_defaults_match_the_tool(self):
        # Before: calibrate_checkpoint required ``out`` (the tool rewrites the
        # checkpoint in place) and prepare_config refused the tool's
        # 'key=value' strings with an AttributeError.
        from oaml_mm.apis import prepare_config
        from oaml_mm.apis.calibrate import calibrate_checkpoint
        path = self._copy('api_inplace.pth', drop_calibration=True)
        cfg = prepare_config(self.config,
                             ['default_hooks.threshold_calibration.far=0.1'],
                             osp.join(self.tmp.name, 'cal_api'))
        cal = calibrate_checkpoint(cfg, path)
        self.assertEqual(safe_load_checkpoint(path)['meta']['oaml_thresholds'],
                         cal)
        self.assertEqual((cal['source'], cal['far']), ('calib', 0.1))

    def test_config_without_validation_is_refused(self):
        cfg = osp.join(self.tmp.name, 'noval.py')
        with open(cfg, 'w') as f:
            f.write(f'_base_ = [{self.config!r}]\n'
                    'val_dataloader = None\nval_cfg = None\n'
                    'val_evaluator = None\n')
        ckpt = runs.last_checkpoint(self.work)
        with self.assertRaises(SystemExit) as e:
            self._run(cfg, ckpt)
        self.assertEqual(str(e.exception),
                         f'{cfg}: no val_dataloader: nothing to calibrate on')
        with self.assertRaises(SystemExit) as e:
            self._run(self.config, osp.join(self.tmp.name, 'missing.pth'))
        self.assertIn('missing.pth: no such checkpoint file',
                      str(e.exception))

    def test_bad_out_and_bad_checkpoint_refused_before_validating(self):
        ckpt = runs.last_checkpoint(self.work)
        not_ckpt = osp.join(self.tmp.name, 'notes.pth')
        with open(not_ckpt, 'w') as f:
            f.write('not a checkpoint\n')
        wd = osp.join(self.tmp.name, 'cal_bad')
        for argv, msg in (
                ((self.config, ckpt, '--out', self.tmp.name + os.sep),
                 r'^OutputPathError: --out .* is a directory'),
                ((self.config, ckpt, '--out', osp.join(not_ckpt, 'o.pth')),
                 r'^OutputPathError: --out '),
                ((self.config, not_ckpt, '--out',
                  osp.join(self.tmp.name, 'o.pth')),
                 r'^CheckpointError: .*notes\.pth')):
            with self.subTest(argv=argv[1:]):
                with self.assertRaisesRegex(SystemExit, msg):
                    self._run(*argv, '--work-dir', wd)
                # Refused up front: no validation pass was started.
                self.assertFalse(osp.exists(wd))

    def test_config_without_calibration_hook_is_refused(self):
        path = self._copy('nohook.pth')
        before = safe_load_checkpoint(path)['meta']['oaml_thresholds']
        with self.assertRaises(SystemExit) as e:
            self._run(self.config, path, '--work-dir',
                      osp.join(self.tmp.name, 'cal_nohook'), '--cfg-options',
                      'default_hooks.threshold_calibration=None')
        self.assertRegex(str(e.exception), r'^nothing calibrated: the config '
                         r'needs a ThresholdCalibrationHook')
        # Nothing written.
        self.assertEqual(
            safe_load_checkpoint(path)['meta']['oaml_thresholds'], before)


class TestCalibrateRefuses(_Trained):
    """tools/calibrate.py never writes thresholds it could not compute honestly."""

    _run = TestCalibrateTool._run
    _copy = TestCalibrateTool._copy

    def _bytes(self, path):
        with open(path, 'rb') as f:
            return f.read()

    def test_partly_loaded_model_is_refused_and_nothing_written(self):
        # A backbone-only file, and a config of another model size: mmengine's
        # load_from loaded what matched and calibrated random heads, exit 0.
        full = self._copy('full.pth')
        ckpt = safe_load_checkpoint(full, decode=False)
        ckpt['state_dict'] = {k: v for k, v in ckpt['state_dict'].items()
                              if k.startswith('backbone.')}
        backbone_only = osp.join(self.tmp.name, 'backbone_only.pth')
        atomic_save(ckpt, backbone_only)
        for path, extra, msg in (
                (backbone_only, (), r'missing keys: neck\.'),
                (full, ('--cfg-options', 'model.neck.hidden_channels=7'),
                 r'shape mismatches: neck\.')):
            with self.subTest(msg=msg):
                before = self._bytes(path)
                with self.assertRaises(SystemExit) as e:
                    self._run(self.config, path, '--work-dir',
                              osp.join(self.tmp.name, 'cal_partial'), *extra)
                text = str(e.exception)
                self.assertRegex(text, r'^CheckpointError: .*' +
                                 re.escape(osp.basename(path)) +
                                 r': does not fit the model of the config')
                self.assertRegex(text, msg)
                self.assertNotIn('\n', text)
                self.assertEqual(self._bytes(path), before)

    def test_symlink_calibrates_the_real_file(self):
        real = self._copy('real.pth', drop_calibration=True)
        link = osp.join(self.tmp.name, 'link.pth')
        os.symlink(real, link)
        self._run(self.config, link, '--work-dir',
                  osp.join(self.tmp.name, 'cal_link'))
        self.assertTrue(osp.islink(link))
        self.assertEqual(os.readlink(link), real)
        self.assertIn('oaml_thresholds', safe_load_checkpoint(real)['meta'])
        self.assertEqual([f for f in os.listdir(self.tmp.name)
                          if f.endswith('.tmp')], [])

    def test_one_sided_pairs_are_one_line_naming_the_file(self):
        from mmengine.config import Config

        from oaml_mm.datasets.verification_bin import write_verification_bin
        images, issame = load_verification_bin(osp.join(self.data, 'val',
                                                        'calib.bin'))
        keep = [i for i, same in enumerate(issame) if same]
        folder = osp.join(self.tmp.name, 'onesided')
        os.makedirs(folder, exist_ok=True)
        write_verification_bin(
            osp.join(folder, 'calib.bin'),
            [images[2 * i + j] for i in keep for j in (0, 1)],
            [True] * len(keep))
        cfg = Config.fromfile(self.config)
        cfg.val_dataloader.dataset.datasets[0].data_root = folder
        cfg_path = osp.join(self.tmp.name, 'onesided_cfg.py')
        cfg.dump(cfg_path)
        path = self._copy('onesided.pth')
        before = self._bytes(path)
        with self.assertRaises(SystemExit) as e:
            self._run(cfg_path, path, '--work-dir',
                      osp.join(self.tmp.name, 'cal_onesided'))
        self.assertEqual(
            str(e.exception),
            f'DataFormatError: {osp.join(folder, "calib.bin")}: the '
            f'calibration pairs are all genuine ({len(keep)} pairs): a '
            'threshold needs both genuine and impostor pairs; nothing was '
            'written')
        self.assertEqual(self._bytes(path), before)

    def test_full_disk_is_one_line_and_keeps_the_file(self):
        import errno
        from unittest import mock
        path = self._copy('full_disk.pth', drop_calibration=True)
        before = self._bytes(path)
        with mock.patch('torch.save', side_effect=OSError(
                errno.ENOSPC, 'No space left on device')):
            with self.assertRaises(SystemExit) as e:
                self._run(self.config, path, '--work-dir',
                          osp.join(self.tmp.name, 'cal_full'))
        self.assertRegex(str(e.exception),
                         r'^OutputPathError: .*full_disk\.pth: cannot write '
                         r'\(No space left on device\); nothing was written')
        self.assertEqual(self._bytes(path), before)
        self.assertEqual([f for f in os.listdir(self.tmp.name)
                          if f.endswith('.tmp')], [])


if __name__ == '__main__':
    unittest.main()
