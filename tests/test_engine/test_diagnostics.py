"""Run diagnostics: every failure mode flagged on a tiny work folder."""
import contextlib
import io
import json
import math
import os
import os.path as osp
import sys
import tempfile
import unittest

import torch

from oaml_mm.engine.diagnostics import (check_classifier_at_chance,
                                        check_lr_schedule, diagnose_run,
                                        expected_lrs, find_config,
                                        read_scalars)
from oaml_mm.errors import ConfigError, DataFormatError, MissingFileError
from oaml_mm.registry import MODELS
from oaml_mm.utils import atomic_save, safe_load_checkpoint
from oaml_mm.utils.config import load_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import diagnose_run as cli  # noqa: E402

NUM_CLASSES = 10
MODEL = dict(
    type='OAMLRecognizer',
    backbone=dict(type='IResNet', depth=18, width_mult=0.125,
                  embedding_size=16),
    neck=dict(type='OcclusionHead', in_channels=64, hidden_channels=8),
    head=dict(type='AdaFaceHead', in_channels=16, num_classes=NUM_CLASSES),
    qaconv_head=dict(type='QAConvHead', in_channels=64))
CONFIG = f'''default_scope = "oaml_mm"
model = {MODEL!r}
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5),
    dict(type='MultiStepLR', by_epoch=False, milestones=[20], gamma=0.1)]
'''


def _write_run(root, stuck=False, bad_lr=False, collapse=False, nan_bn=False,
               flat_occ=False, steps=40):
    stamp = osp.join(root, '20260101_000000', 'vis_data')
    os.makedirs(stamp)
    with open(osp.join(stamp, 'config.py'), 'w') as f:
        f.write(CONFIG)
    lrs = expected_lrs(load_config(osp.join(stamp, 'config.py')), steps)
    with open(osp.join(stamp, 'scalars.json'), 'w') as f:
        for s in range(1, steps + 1):
            acc = 0.1 if stuck else min(1.0, s / steps)
            loss = math.log(NUM_CLASSES) * (1.0 if stuck else 1 - 0.02 * s)
            lr = lrs[s - 1] * (3.0 if bad_lr and s > 25 else 1.0)
            f.write(json.dumps(dict(step=s, lr=lr, loss=loss,
                                    loss_adaface=loss, acc_adaface=acc)) + '\n')
        f.write(json.dumps(dict(step=steps, lfw_accuracy=99.0)) + '\n')
    torch.manual_seed(0)
    model = MODELS.build(MODEL)
    atomic_save({'state_dict': model.state_dict()},
                osp.join(root, 'iter_10.pth'))
    with torch.no_grad():
        if collapse:
            model.head.kernel.mul_(1e-3)
        if nan_bn:
            bn = next(m for m in model.backbone.modules()
                      if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var[0] = float('nan')
        if flat_occ:
            model.neck.out.weight.zero_()
    atomic_save({'state_dict': model.state_dict()},
                osp.join(root, 'iter_40.pth'))


class TestDiagnostics(unittest.TestCase):

    def _run(self, **kw):
        with tempfile.TemporaryDirectory() as tmp:
            _write_run(tmp, **kw)
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                code = cli.main([tmp])
            return {f.check: f for f in diagnose_run(tmp)}, code, buf.getvalue()

    def test_healthy_run(self):
        found, code, out = self._run()
        self.assertEqual({k: f.status for k, f in found.items()}, {
            'classifier_at_chance': 'ok', 'kernel_norm_collapse': 'ok',
            'bn_nonfinite': 'ok', 'lr_schedule': 'ok',
            'occlusion_constant': 'ok'})
        self.assertEqual(code, 0)
        self.assertIn('| lr_schedule | ok |', out)

    def test_each_failure_flagged(self):
        for kw, check in ((dict(stuck=True), 'classifier_at_chance'),
                          (dict(bad_lr=True), 'lr_schedule'),
                          (dict(collapse=True), 'kernel_norm_collapse'),
                          (dict(nan_bn=True), 'bn_nonfinite'),
                          (dict(flat_occ=True), 'occlusion_constant')):
            with self.subTest(check=check):
                found, code, out = self._run(**kw)
                flagged = {k for k, f in found.items() if f.status == 'flag'}
                self.assertEqual(flagged, {check})
                self.assertEqual(code, 1)
                self.assertIn(f'| {check} | **FLAG** |', out)

    def test_checkpoint_that_does_not_fit_the_config_is_not_judged(self):
        # A checkpoint without the config's occlusion head (another model's):
        # a non-strict load judged the random head as healthy ('ok').
        with tempfile.TemporaryDirectory() as tmp:
            _write_run(tmp, flat_occ=True)
            path = osp.join(tmp, 'iter_40.pth')
            state = safe_load_checkpoint(path)['state_dict']
            atomic_save({'state_dict': {k: v for k, v in state.items()
                                        if not k.startswith('neck.')}}, path)
            found = {f.check: f for f in diagnose_run(tmp)}
        self.assertEqual(found['occlusion_constant'].status, 'skipped')
        self.assertRegex(found['occlusion_constant'].message,
                         r'the config does not fit: .*iter_40\.pth.*neck\.')

    def test_judges_with_the_config_the_run_dumped(self):
        # A later tools/test.py on the same work dir dumps its own config (here
        # another schedule) at the top and in a newer session's vis_data; the
        # checkpoint's meta names the run's config, which is the one used.
        other = CONFIG.replace('milestones=[20]', 'milestones=[10]')
        with tempfile.TemporaryDirectory() as tmp:
            _write_run(tmp)
            for name, text in (('run.py', CONFIG), ('test_run.py', other)):
                with open(osp.join(tmp, name), 'w') as f:
                    f.write(text)
            later = osp.join(tmp, '20260201_000000', 'vis_data')
            os.makedirs(later)
            with open(osp.join(later, 'config.py'), 'w') as f:
                f.write(other)
            path = osp.join(tmp, 'iter_40.pth')
            state = safe_load_checkpoint(path)
            state['meta'] = {'experiment_name': 'run_20260101_000000'}
            atomic_save(state, path)
            self.assertEqual(find_config(tmp, path), osp.join(tmp, 'run.py'))
            found = {f.check: f for f in diagnose_run(tmp)}
            self.assertEqual(found['lr_schedule'].status, 'ok')
            # Named by nothing: refused, naming both, not judged by either.
            del state['meta']
            atomic_save(state, path)
            with self.assertRaisesRegex(
                    ConfigError, r'run\.py, test_run\.py'):
                diagnose_run(tmp)

    def test_lr_message_names_step(self):
        with tempfile.TemporaryDirectory() as tmp:
            _write_run(tmp, bad_lr=True)
            cfg = load_config(osp.join(tmp, '20260101_000000', 'vis_data',
                                       'config.py'))
            f = check_lr_schedule(read_scalars(tmp), cfg)
        self.assertIn('15 of 40', f.message)
        self.assertIn('step 26', f.message)

    def test_expected_lrs(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = osp.join(tmp, 'c.py')
            with open(path, 'w') as f:
                f.write(CONFIG)
            lrs = expected_lrs(load_config(path), 25)
        self.assertAlmostEqual(lrs[0], 0.01)
        self.assertAlmostEqual(lrs[5], 0.1)
        self.assertAlmostEqual(lrs[19], 0.1)
        self.assertAlmostEqual(lrs[20], 0.01)

    def test_skips_and_errors(self):
        self.assertEqual(check_classifier_at_chance({}, 10).status, 'skipped')
        with tempfile.TemporaryDirectory() as tmp:
            # A folder with no run once gave an all-"skipped" table, exit 0.
            with self.assertRaisesRegex(MissingFileError, 'no training run'):
                diagnose_run(tmp)
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                self.assertEqual(cli.main([tmp]), 2)
            self.assertIn('no training run', err.getvalue())
            os.makedirs(osp.join(tmp, 'x', 'vis_data'))
            with open(osp.join(tmp, 'x', 'vis_data', 'scalars.json'), 'w') as f:
                f.write('{"step": 1, "lr": 0.1}\nnot json\n'
                        '{"step": 2, "lr": 0.1}\n')
            with self.assertRaisesRegex(DataFormatError, 'record 2'):
                read_scalars(tmp)
            with contextlib.redirect_stderr(io.StringIO()):
                self.assertEqual(cli.main([tmp]), 2)
        with self.assertRaises(MissingFileError):
            diagnose_run('/nonexistent/run')

    def test_cut_last_line(self):
        # A run killed while mmengine wrote a log line: the table once was
        # refused ("record 41: not JSON"); the cut line is now skipped, noted.
        with tempfile.TemporaryDirectory() as tmp:
            _write_run(tmp)
            path = osp.join(tmp, '20260101_000000', 'vis_data', 'scalars.json')
            with open(path, 'a') as f:
                f.write('{"step": 41, "lr": 0.0')
            notes = []
            self.assertEqual(max(read_scalars(tmp, notes)), 40)
            self.assertEqual(len(notes), 1)
            self.assertIn('last line 42 is incomplete', notes[0])
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                code = cli.main([tmp])
            self.assertEqual(code, 0)
            self.assertIn('| lr_schedule | ok |', buf.getvalue())
            self.assertIn('Note: ', buf.getvalue())
            self.assertIn('last line 42 is incomplete', buf.getvalue())


if __name__ == '__main__':
    unittest.main()


class TestClassifierAtChanceKeys(unittest.TestCase):

    def test_reads_the_keys_of_the_margin_head_in_use(self):
        stuck = {s: dict(loss_arcface=2.0, acc_arcface=0.01,
                         loss_qaconv=1.0, acc_qaconv_pairwise=0.9)
                 for s in range(1, 41)}
        found = check_classifier_at_chance(stuck, num_classes=10)
        self.assertEqual(found.status, 'flag')
        self.assertIn('acc_arcface', found.message)
