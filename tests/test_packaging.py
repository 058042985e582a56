"""The wheel carries configs, tools and the model index, and works outside the checkout.

Builds the wheel from a copy of the repository (``pip wheel --no-deps
--no-build-isolation``, as a user would), installs it into an empty folder with
``pip install --no-deps --target`` and runs everything from another folder with only
that folder on ``PYTHONPATH``: the checkout is on no path, so every config and tool
comes from ``oaml_mm/.mim/`` (setup.py, ``add_mim_extension``). Then ``oaml_mm::``
bases resolve, ``mim list`` / ``mim search oaml_mm`` see the package, ``mim train
oaml_mm oaml_ir18_synthface.py`` trains the shipped demo config for two iterations on
generated tiny SynthFace data (shrunk with ``--cfg-options``) and ``mim test`` evaluates
that checkpoint on the config's six test sets.
"""
import importlib.util
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import unittest

from oaml_mm.synthface import SynthFaceConfig, generate_synthface

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# Build inputs only: no .venv, data, work dirs or a stale .mim of an earlier build.
_IGNORE = shutil.ignore_patterns('.venv', '.git', 'data', 'work_dirs', 'build',
                                 'dist', '*.egg-info', '__pycache__', '.mim',
                                 'tests', 'benchmarks', 'docs', '.hypothesis',
                                 '.pytest_cache', '*.pth')
TINY = SynthFaceConfig(identities=6, images_per_id=3, test_identities=6,
                       occluded_per_id=2, val_images_per_id=4, val_pairs=40,
                       ijbc_subjects=3, ijbc_probe_templates=1)

USER_CONFIG = """
# A user's own experiment: the shipped configs as bases, from the installed package.
_base_ = ['oaml_mm::oaml/ir50-oaml_4xb128_ms1mv2.py',
          'oaml_mm::_base_/datasets/ijbc.py']
model = dict(backbone=dict(depth=101))
"""

CHECK_SCRIPT = """
import json, sys
import oaml_mm
from oaml_mm.utils import load_config
cfg = load_config('user_config.py')
demo = load_config(sys.argv[1])
print(json.dumps(dict(
    oaml_mm=oaml_mm.__file__,
    sys_path=sys.path,
    depth=cfg.model.backbone.depth,
    qaconv=cfg.model.qaconv_head.type,
    test_metric=cfg.test_evaluator.type,
    test_subset=cfg.test_dataloader.dataset.subset,
    demo_qaconv_vis_mode=demo.model.qaconv_head.vis_mode)))
"""


def _mim_dir():
    """The folder that holds the ``mim`` package (openmim), or None."""
    spec = importlib.util.find_spec('mim')
    if spec is None or not spec.submodule_search_locations:
        return None
    return osp.dirname(list(spec.submodule_search_locations)[0])


class TestWheel(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        tmp = cls.tmp.name
        src = osp.join(tmp, 'src')
        shutil.copytree(ROOT, src, ignore=_IGNORE, symlinks=True)
        proc = subprocess.run(
            [sys.executable, '-m', 'pip', 'wheel', '--no-deps',
             '--no-build-isolation', '--disable-pip-version-check', '-q', '-w',
             osp.join(tmp, 'dist'), src],
            capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        wheels = os.listdir(osp.join(tmp, 'dist'))
        assert len(wheels) == 1, wheels
        cls.wheel = osp.join(tmp, 'dist', wheels[0])
        cls.site = osp.join(tmp, 'site')
        proc = subprocess.run(
            [sys.executable, '-m', 'pip', 'install', '--no-deps',
             '--disable-pip-version-check', '-q', '--target', cls.site,
             cls.wheel], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        cls.run_dir = osp.join(tmp, 'elsewhere')
        os.makedirs(cls.run_dir)
        cls.data = osp.join(tmp, 'synthface')
        generate_synthface(cls.data, TINY, workers=1, log=None)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def _env(self, extra_path=()):
        env = {k: v for k, v in os.environ.items()
               if k not in ('PYTHONPATH', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK')}
        env['PYTHONPATH'] = os.pathsep.join([self.site, *extra_path])
        env['OMP_NUM_THREADS'] = '1'
        env['PYTHONWARNINGS'] = 'ignore'
        return env

    def _run(self, args, extra_path=(), timeout=300):
        proc = subprocess.run(args, cwd=self.run_dir, env=self._env(extra_path),
                              capture_output=True, text=True, timeout=timeout)
        self.assertEqual(proc.returncode, 0,
                         proc.stdout[-3000:] + proc.stderr[-3000:])
        return proc

    def test_wheel_carries_configs_tools_and_model_index(self):
        mim = osp.join(self.site, 'oaml_mm', '.mim')
        for rel in ('model-index.yml', 'configs/oaml/metafile.yml',
                    'configs/adaface/metafile.yml',
                    'configs/oaml/ir50-oaml_4xb128_ms1mv2.py',
                    'configs/_base_/datasets/ijbc.py',
                    'configs/synthface/oaml_ir18_synthface.py',
                    'tools/train.py', 'tools/test.py', 'tools/dist_train.sh'):
            self.assertTrue(osp.isfile(osp.join(mim, rel)), rel)
        # The launcher keeps its executable bit through the wheel.
        self.assertTrue(os.access(osp.join(mim, 'tools', 'dist_train.sh'),
                                  os.X_OK))
        # Research code stays in the checkout: no projects/ (the occlusion study)
        # at the top of the installed folder nor inside oaml_mm/.mim.
        shipped = [osp.relpath(osp.join(d, f), self.site)
                   for d, _, files in os.walk(self.site) for f in files]
        self.assertTrue(any(p.startswith('oaml_mm') for p in shipped))
        self.assertEqual([p for p in shipped
                          if 'projects' in p.split(os.sep)
                          or 'occlusion_study' in p], [])

    def test_oaml_mm_bases_resolve_outside_the_checkout(self):
        with open(osp.join(self.run_dir, 'user_config.py'), 'w') as f:
            f.write(USER_CONFIG)
        with open(osp.join(self.run_dir, 'check.py'), 'w') as f:
            f.write(CHECK_SCRIPT)
        demo = osp.join(self.site, 'oaml_mm', '.mim', 'configs', 'synthface',
                        'oaml_ir18_synthface.py')
        out = json.loads(self._run(
            [sys.executable, 'check.py', demo]).stdout.strip().splitlines()[-1])
        self.assertEqual(out['oaml_mm'],
                         osp.join(self.site, 'oaml_mm', '__init__.py'))
        self.assertNotIn(ROOT, [osp.abspath(p) for p in out['sys_path'] if p])
        self.assertEqual(out['depth'], 101)
        self.assertEqual(out['qaconv'], 'QAConvHead')
        self.assertEqual((out['test_metric'], out['test_subset']),
                         ('IJBMetric', 'IJBC'))
        self.assertEqual(out['demo_qaconv_vis_mode'], 'gate')

    def test_mim_lists_searches_trains_and_tests_a_shipped_config(self):
        mim_dir = _mim_dir()
        if mim_dir is None:
            self.skipTest('openmim is not installed (make install installs '
                          'requirements/mim.txt)')
        extra = [] if mim_dir == sysconfig.get_paths()['purelib'] \
            else [mim_dir]
        mim = [sys.executable, '-c', 'from mim.cli import cli; cli()']
        listed = self._run(mim + ['list'], extra).stdout
        self.assertIn('oaml', listed.replace('-', '_'))
        found = self._run(mim + ['search', 'oaml_mm'], extra).stdout
        for name in ('ir50-oaml_4xb128_ms1mv2', 'ir101-adaface_4xb128_ms1mv2',
                     'ir18-oaml_synthface'):
            self.assertIn(f'config id: {name}', found)

        d = self.data
        options = [
            f'data_root={d}', f'occlusion_data_root={d}', f'val_data_root={d}',
            f'test_data_root={d}', f'train_num_classes={TINY.identities}',
            f'model.head.num_classes={TINY.identities}',
            f'train_dataloader.dataset.datasets.0.num_classes={TINY.identities}',
            'train_dataloader.batch_size=8', 'train_dataloader.sampler.batch_size=8',
            'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False',
            'custom_hooks.1.batch_size=4',
            'custom_hooks.1.occluded_dataloader.num_workers=0',
            'train_cfg.max_iters=2']
        self._run(mim + ['train', 'oaml_mm', 'oaml_ir18_synthface.py',
                         '--work-dir', 'work', '--cfg-options'] + options, extra)
        work = osp.join(self.run_dir, 'work')
        self.assertTrue(osp.isfile(osp.join(work, 'iter_2.pth')))
        # The shipped config ran, found by name inside the installed package.
        with open(osp.join(work, 'oaml_ir18_synthface.py')) as f:
            self.assertIn("vis_mode='gate'", f.read())

        # mim test runs the package's tools/test.py on that checkpoint, from
        # this folder, with the same shrunk data.
        tested = self._run(
            mim + ['test', 'oaml_mm', 'oaml_ir18_synthface.py', '--checkpoint',
                   osp.join('work', 'iter_2.pth'), '--work-dir', 'test_work',
                   '--out', 'metrics.json', '--cfg-options',
                   f'test_data_root={d}', 'test_dataloader.batch_size=32'],
            extra).stdout
        self.assertIn('metrics written to metrics.json', tested)
        with open(osp.join(self.run_dir, 'metrics.json')) as f:
            metrics = json.load(f)
        # Every set of the config's test_evaluator, every branch, in percent;
        # the printed table (one row per set and branch) shows the same AUC.
        rows = {tuple(line.split()[:2]): line.split()[2:]
                for line in tested.splitlines() if len(line.split()) > 2}
        for name in ('clean', 'masked', 'occluded', 'heldout_clean',
                     'heldout_masked', 'heldout_occluded'):
            for branch in ('adaface', 'qaconv', 'fused'):
                auc = metrics[f'{name}/{branch}/AUC']
                self.assertTrue(0.0 <= auc <= 100.0, (name, branch, auc))
                self.assertIn(f'{auc:.4f}', rows[(name, branch)])
            self.assertIn(f'{name}/qaconv_no_vis/accuracy', metrics)
        # The CSV goes next to --out, the ROC plots into the work dir.
        self.assertTrue(osp.isfile(osp.join(self.run_dir, 'metrics.csv')))
        self.assertTrue(osp.isfile(osp.join(self.run_dir, 'test_work',
                                            'roc_clean.png')))


if __name__ == '__main__':
    unittest.main()
