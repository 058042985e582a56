"""Every shipped config loads, builds (model, data sets, metrics, hooks) and says what
the docs promise: architecture, classes, total batch, data roots and their overrides.

Data sets are built with ``lazy_init=True`` (no data on disk); each distinct model
config is built once.
"""
import copy
import glob
import os.path as osp
import tempfile
import unittest

import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

from oaml_mm.engine import GuardedOptimWrapper
from oaml_mm.registry import DATASETS, HOOKS, METRICS, MODELS
from oaml_mm.utils import ROOT_SCOPES, load_config, merge_cfg_options

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: The shipped configs and those of the projects (projects/*/configs/).
CONFIGS = sorted(
    p for pattern in (('configs', '**', '*.py'),
                      ('projects', '*', 'configs', '**', '*.py'))
    for p in glob.glob(osp.join(ROOT, *pattern), recursive=True)
    if '_base_' not in osp.relpath(p, ROOT).split(osp.sep))
STUDY_CONFIGS = osp.join(ROOT, 'projects', 'occlusion_study', 'configs')
VAL_SETS = ['lfw', 'cfp_fp', 'agedb_30', 'calfw', 'cplfw']
BACKBONE_PARAMS = {50: 43_585_600, 101: 65_150_912}
GPUS = 4  # the documented launch: tools/dist_train.sh CONFIG 4
# {backbone}-{algorithm}_{gpus}xb{batch}_{data}.py, per algorithm folder.
NEW_NAMES = (
    'oaml/ir50-oaml_4xb128_ms1mv2.py', 'oaml/ir101-oaml_4xb128_ms1mv2.py',
    'oaml/ir50-oaml_4xb128_casia.py', 'oaml/ir50-oaml-pfc_8xb128_webface42m.py',
    'adaface/ir50-adaface_4xb128_ms1mv2.py',
    'adaface/ir101-adaface_4xb128_ms1mv2.py', 'oaml/ir50-oaml_test-ijbc.py',
    'oaml/ir50-oaml_test-ijbb.py', 'oaml/ir101-oaml_test-ijbc.py',
    'oaml/ir101-oaml_test-ijbb.py', 'oaml/ir50-oaml_test-tinyface.py',
    'adaface/ir50-adaface_test-ijbc.py', 'adaface/ir50-adaface_test-ijbb.py')
#: Old top-level names that keep working (docs/get_started.md, "Config names").
ALIASES = {
    'oaml_ir50.py': 'oaml/ir50-oaml_4xb128_ms1mv2.py',
    'oaml_ir101.py': 'oaml/ir101-oaml_4xb128_ms1mv2.py',
    'oaml_ir50_casia.py': 'oaml/ir50-oaml_4xb128_casia.py',
    'adaface_ir50.py': 'adaface/ir50-adaface_4xb128_ms1mv2.py',
    'adaface_ir101.py': 'adaface/ir101-adaface_4xb128_ms1mv2.py',
}


def _name(path):
    rel = osp.relpath(path, ROOT)
    return osp.relpath(path, osp.join(ROOT, 'configs')) \
        if rel.startswith('configs' + osp.sep) else rel


def _as_list(x):
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _lazy(ds_cfg):
    """Copy of a data set config that reads no file, wrappers included."""
    ds_cfg = copy.deepcopy(ds_cfg)
    ds_cfg['lazy_init'] = True
    if isinstance(ds_cfg.get('dataset'), dict):
        ds_cfg['dataset'] = _lazy(ds_cfg['dataset'])
    if isinstance(ds_cfg.get('datasets'), (list, tuple)):
        ds_cfg['datasets'] = [_lazy(d) for d in ds_cfg['datasets']]
    return ds_cfg


def _datasets(cfg):
    """Every data set config in the config: dataloaders and hook dataloaders."""
    out = []
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        for dl in _as_list(cfg.get(key)):
            out.append((key, dl['dataset']))
    for i, hook in enumerate(cfg.get('custom_hooks', []) or []):
        for key in ('occluded_dataloader', 'clean_dataloader'):
            if hook.get(key):
                out.append((f'custom_hooks.{i}.{key}', hook[key]['dataset']))
    return out


class TestShippedConfigs(unittest.TestCase):
    _models = {}

    @classmethod
    def setUpClass(cls):
        # As the Runner does: wrappers (ConcatDataset) build their parts by name.
        init_default_scope('oaml_mm')

    @classmethod
    def _model(cls, model_cfg):
        key = repr(model_cfg.to_dict() if hasattr(model_cfg, 'to_dict')
                   else model_cfg)
        if key not in cls._models:
            model_cfg = copy.deepcopy(model_cfg)
            head = model_cfg.get('head') or {}
            if head.get('type') == 'PartialFCHead' and \
                    head.get('num_classes', 0) > 100000:
                # Built in one process the sharded head holds every centre
                # (2.06M x 512 = 4.2 GB for WebFace42M): check a small one.
                head['num_classes'] = 1000
            cls._models[key] = MODELS.build(model_cfg)
        return cls._models[key]

    def test_expected_configs_ship(self):
        names = {_name(p) for p in CONFIGS}
        for n in NEW_NAMES:
            self.assertIn(n, names)
        for n in ALIASES:
            self.assertIn(n, names)

    def test_aliases_are_documented_and_only_inherit(self):
        # docs/get_started.md, "Config names": old names kept working, each a
        # one-base file pointing at the full name, and nothing else at the top.
        with open(osp.join(ROOT, 'docs', 'get_started.md')) as f:
            doc = f.read()
        top = {osp.basename(p) for p in CONFIGS
               if osp.dirname(p) == osp.join(ROOT, 'configs')}
        self.assertEqual(top, set(ALIASES))
        for old, new in ALIASES.items():
            with self.subTest(alias=old):
                cfg = load_config(osp.join(ROOT, 'configs', old))
                ref = load_config(osp.join(ROOT, 'configs', new))
                a, b = cfg.to_dict(), ref.to_dict()
                a.pop('filename', None), b.pop('filename', None)
                self.assertEqual(a, b)
                self.assertIn(f'| `configs/{old}` | `configs/{new}` |', doc)

    def test_metafiles_name_existing_configs(self):
        # `mim search oaml_mm` and the config READMEs read these.
        import yaml
        with open(osp.join(ROOT, 'model-index.yml')) as f:
            index = yaml.safe_load(f)
        listed = set()
        for meta in index['Import']:
            with open(osp.join(ROOT, meta)) as f:
                models = yaml.safe_load(f)['Models']
            with open(osp.join(ROOT, osp.dirname(meta), 'README.md')) as f:
                readme = f.read()
            for m in models:
                self.assertTrue(osp.isfile(osp.join(ROOT, m['Config'])),
                                m['Config'])
                listed.add(osp.relpath(m['Config'], 'configs'))
                self.assertIn(osp.basename(m['Config']), readme)
        # Every training config of the algorithm folders is in a metafile.
        for n in NEW_NAMES:
            if '_test-' not in n:
                self.assertIn(n, listed)

    def test_every_config_builds(self):
        for path in CONFIGS:
            with self.subTest(config=_name(path)):
                self._check_builds(load_config(path),
                                   user=_name(path).split('/')[0] in (
                                       'oaml', 'adaface') or '/' not in _name(path))

    def _check_builds(self, cfg, user):
        # mmengine's Runner demands all-or-nothing for these triples.
        for stage in ('val', 'test'):
            parts = [cfg.get(f'{stage}_dataloader'), cfg.get(f'{stage}_cfg'),
                     cfg.get(f'{stage}_evaluator')]
            self.assertIn(sum(p is None for p in parts), (0, 3), stage)
        model = self._model(cfg.model)
        # A recognizer, or a model that trains a visibility segmenter on its own.
        self.assertTrue(hasattr(model, 'backbone') or hasattr(model, 'segmenter'))
        for where, ds_cfg in _datasets(cfg):
            ds = DATASETS.build(_lazy(ds_cfg))
            self.assertFalse(ds._fully_initialized, where)
        for ev in _as_list(cfg.get('val_evaluator')) + \
                _as_list(cfg.get('test_evaluator')):
            for metric in _as_list(ev):
                m = METRICS.build(copy.deepcopy(metric))
                if user and getattr(model, 'qaconv_head', None) is None:
                    # A baseline without QAConv must not ask for its branches.
                    self.assertEqual(m.branches, ('adaface', ))
        for hook in cfg.get('custom_hooks', []) or []:
            HOOKS.build(copy.deepcopy(hook))
        if cfg.get('optim_wrapper') is not None:
            # Every training config skips non-finite updates (docs/reliability.md).
            wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
            self.assertIsInstance(wrapper, GuardedOptimWrapper)
            self.assertEqual(wrapper.max_nonfinite_skips, 5)
        train = cfg.get('train_dataloader')
        if train is not None and train.get('sampler', {}).get(
                'type') == 'PKSampler':
            self.assertEqual(train.sampler.batch_size, train.batch_size)

    def test_segmenter_configs(self):
        # The segmenter trains on training data only; the OAML config with it
        # is the demo model with only the neck (and its stream) changed.
        for path in (osp.join(ROOT, 'configs', 'synthface',
                              'occlusion_segmenter_synthface.py'),
                     osp.join(STUDY_CONFIGS,
                              'occlusion_segmenter_synthface_real.py')):
            seg = load_config(path)
            text = repr(seg.train_dataloader.to_dict())
            # Real faces: only the training part of real_faces.py's split (the
            # test part and the portraits are what the real-photo aims are
            # judged on).
            for held_out in ('heldout', 'calib', '/val', 'ijbc', 'test.txt',
                             'portraits'):
                self.assertNotIn(held_out, text, path)
            self.assertEqual(seg.train_cfg.max_iters,
                             seg.param_scheduler[0].total_steps, path)
        real = [d.dataset for d in seg.train_dataloader.dataset.datasets
                if d.get('dataset', {}).get('type') == 'FaceImageFolder']
        self.assertEqual([(d.data_root, d.ann_file) for d in real],
                         [('data/real_faces', 'train.txt')])
        demo = load_config(osp.join(ROOT, 'configs', 'synthface',
                                    'oaml_ir18_synthface.py'))
        oaml = load_config(osp.join(ROOT, 'configs', 'synthface',
                                    'oaml_ir18_synthface_segmenter.py'))
        self.assertEqual(oaml.model.neck.type, 'OcclusionSegmenter')
        self.assertTrue(oaml.model.neck.frozen)
        self.assertEqual(oaml.model.neck.init_cfg.prefix, 'segmenter.')
        for key in ('backbone', 'head', 'qaconv_head', 'loss_weights',
                    'test_cfg'):
            self.assertEqual(oaml.model[key], demo.model[key], key)
        self.assertEqual(oaml.model.train_cfg.qaconv_train_vis, 'gt')
        self.assertEqual(oaml.train_dataloader, demo.train_dataloader)
        self.assertEqual([h.type for h in oaml.custom_hooks],
                         ['MarginWarmupHook'])

    def test_user_training_configs(self):
        for name, depth, oaml in (
                ('oaml/ir50-oaml_4xb128_ms1mv2.py', 50, True),
                ('oaml/ir101-oaml_4xb128_ms1mv2.py', 101, True),
                ('adaface/ir50-adaface_4xb128_ms1mv2.py', 50, False),
                ('adaface/ir101-adaface_4xb128_ms1mv2.py', 101, False),
                ('oaml/ir50-oaml_4xb128_casia.py', 50, True)):
            with self.subTest(config=name):
                cfg = load_config(osp.join(ROOT, 'configs', name))
                self.assertEqual(cfg.model.backbone.depth, depth)
                casia = 'casia' in name
                self.assertEqual(cfg.model.head.num_classes,
                                 10572 if casia else 85742)
                self.assertEqual(cfg.train_dataloader.dataset.num_classes,
                                 cfg.model.head.num_classes)
                self.assertEqual(cfg.data_root, 'data/faces_webface_112x112'
                                 if casia else 'data/faces_emore')
                self.assertEqual(cfg.train_dataloader.dataset.data_root,
                                 cfg.data_root)
                # 4 GPUs x 128 = the recipe's 512, which --auto-scale-lr assumes.
                self.assertEqual(cfg.train_dataloader.batch_size * GPUS,
                                 cfg.auto_scale_lr.base_batch_size)
                self.assertEqual(cfg.auto_scale_lr.base_batch_size, 512)
                types = [t['type'] for t in
                         cfg.train_dataloader.dataset.pipeline]
                self.assertEqual(types, ['FaceAugmenter', 'MedicalMaskOcclusion',
                                         'FaceRandomFlip', 'PackFaceInputs'])
                self.assertEqual(cfg.train_cfg.max_epochs, 26)
                self.assertEqual(cfg.optim_wrapper.optimizer.lr, 0.1)
                self.assertEqual(cfg.val_cfg.type, 'FaceValLoop')
                self.assertEqual(
                    [d.dataset.ann_file for d in cfg.val_dataloader],
                    [f'{n}.bin' for n in VAL_SETS])
                self.assertEqual(
                    [e.dataset_name for e in cfg.val_evaluator], VAL_SETS)
                hooks = [h.type for h in cfg.get('custom_hooks', [])]
                self.assertEqual(hooks, ['DualLoaderHook'] if oaml else [])
                if oaml:
                    self.assertEqual(cfg.custom_hooks[0].occluded_ratio, 0.8)
                    self.assertEqual(cfg.model.qaconv_head.type, 'QAConvHead')
                else:
                    self.assertIsNone(cfg.model.qaconv_head)

    def test_partial_fc_configs(self):
        for name, classes, per_rank in (
                (osp.join('oaml', 'ir50-oaml-pfc_8xb128_webface42m.py'), 2059906,
                 128),
                (osp.join('synthface', 'adaface_ir18_pfc_2xb16_synthface.py'),
                 400, 16)):
            with self.subTest(config=name):
                cfg = load_config(osp.join(ROOT, 'configs', name))
                head = cfg.model.head
                self.assertEqual(head.type, 'PartialFCHead')
                self.assertEqual(head.margin_head.type, 'AdaFaceHead')
                self.assertEqual(head.num_classes, classes)
                self.assertNotIn('m', set(head) - {'margin_head'})
                self.assertEqual(cfg.train_dataloader.batch_size, per_rank)
                dataset = cfg.train_dataloader.dataset
                if 'num_classes' in dataset:
                    self.assertEqual(dataset.num_classes, classes)

    def test_synthface_configs_checkpoint_periodically(self):
        # A killed run of a SynthFace config, or of one derived from it with a
        # longer budget, resumes from a checkpoint at most 100 iterations old.
        base = osp.join(ROOT, 'configs', 'synthface', 'oaml_ir18_synthface.py')
        paths = [p for p in CONFIGS if _name(p).startswith('synthface/')]
        with tempfile.TemporaryDirectory() as tmp:
            derived = osp.join(tmp, 'my_longer_run.py')
            with open(derived, 'w') as f:
                f.write(f"_base_ = [{base!r}]\ntrain_cfg = dict(max_iters=1500)\n")
            for path in paths + [derived]:
                cfg = load_config(path)
                if cfg.get('train_cfg') is None:
                    continue
                with self.subTest(config=osp.basename(path)):
                    ckpt = cfg.default_hooks.checkpoint
                    self.assertFalse(ckpt.by_epoch)
                    self.assertLessEqual(ckpt.interval, 100)
                    self.assertLess(ckpt.interval, cfg.train_cfg.max_iters)
                    self.assertTrue(ckpt.save_last)

    def test_documented_head_swap_builds(self):
        # docs/models.md, "Swapping the margin head": the config shown there.
        with open(osp.join(ROOT, 'docs', 'models.md')) as f:
            doc = f.read()
        block = doc.split('<!-- head-swap-example')[1].split('```python\n')[1]
        block = block.split('```')[0]
        with tempfile.TemporaryDirectory() as tmp:
            path = osp.join(tmp, 'my_ir50-arcface_4xb128_ms1mv2.py')
            with open(path, 'w') as f:
                f.write(block.replace("'./oaml/", repr(
                    osp.join(ROOT, 'configs', 'oaml', ''))[:-1]))
            cfg = load_config(path)
        head = cfg.model.head
        self.assertEqual(head.type, 'ArcFaceHead')
        self.assertEqual(head.num_classes, 85742)
        self.assertNotIn('h', head)
        model = MODELS.build(copy.deepcopy(cfg.model))
        self.assertEqual(model.head.branch_name, 'arcface')
        self.assertEqual(tuple(model.head.kernel.shape), (512, 85742))
        self.assertEqual(cfg.default_hooks.checkpoint.save_best,
                         'lfw/fused/accuracy')

    def test_test_configs_compose_model_and_shipped_test_set(self):
        # A test config = a model config without a test set + a shipped test set
        # as the second base (docs/data_layout.md, "Test configs"); the SynthFace
        # mini IJB-C configs reuse configs/_base_/datasets/ijbc.py that way.
        from mmengine.config import Config
        ijbc = load_config(osp.join(ROOT, 'configs', '_base_', 'datasets',
                                    'ijbc.py'))
        for name, model in (('oaml_ir18_synthface_ijbc.py', 'oaml'),
                            ('adaface_ir18_synthface_ijbc.py', 'adaface')):
            with self.subTest(config=name):
                path = osp.join(ROOT, 'configs', 'synthface', name)
                self.assertEqual(Config._get_base_files(path), [
                    f'./_base_/{model}_ir18_synthface_train.py',
                    '../_base_/datasets/ijbc.py'])
                cfg = merge_cfg_options(load_config(path),
                                        {'test_data_root': '/mnt/sf'})
                ds, ev = cfg.test_dataloader.dataset, cfg.test_evaluator
                self.assertEqual((ds.data_root, ev.data_root),
                                 ('/mnt/sf/ijbc', '/mnt/sf/ijbc'))
                self.assertEqual(ds.pipeline, ijbc.test_dataloader.dataset.pipeline)
                self.assertEqual(ev.gallery_files, ijbc.test_evaluator.gallery_files)
                self.assertEqual(cfg.test_cfg.type, 'FaceTestLoop')
                # Same model and training as the demo config it tests.
                demo = load_config(path.replace('_ijbc.py', '.py'))
                self.assertEqual(cfg.model.to_dict(), demo.model.to_dict())
                self.assertEqual(cfg.train_dataloader.to_dict(),
                                 demo.train_dataloader.to_dict())
        # Any test set composes with a training part: TinyFace and IJB-B too.
        with tempfile.TemporaryDirectory() as tmp:
            for test_set in ('ijbb.py', 'tinyface.py'):
                mine = osp.join(tmp, f'my_{test_set}')
                with open(mine, 'w') as f:
                    f.write('_base_ = [%r, %r]\n' % (
                        osp.join(ROOT, 'configs', 'synthface', '_base_',
                                 'oaml_ir18_synthface_train.py'),
                        osp.join(ROOT, 'configs', '_base_', 'datasets',
                                 test_set)))
                cfg = load_config(mine)
                self.assertIn(cfg.test_evaluator.type,
                              ('IJBMetric', 'TinyFaceMetric'))
                self.assertEqual(cfg.model.qaconv_head.vis_mode, 'gate')

    def test_backbone_parameter_counts(self):
        # Once per architecture (docs/models.md counts).
        for name in ('oaml/ir50-oaml_4xb128_ms1mv2.py',
                     'oaml/ir101-oaml_4xb128_ms1mv2.py'):
            cfg = load_config(osp.join(ROOT, 'configs', name))
            model = self._model(cfg.model)
            n = sum(p.numel() for p in model.backbone.parameters())
            self.assertEqual(n, BACKBONE_PARAMS[cfg.model.backbone.depth])
            with torch.no_grad():
                model.eval()
                feats, emb, norm = model.backbone(torch.zeros(1, 3, 112, 112))
            self.assertEqual(tuple(feats.shape), (1, 512, 7, 7))
            self.assertEqual(tuple(emb.shape), (1, 512))

    def test_ijb_test_configs(self):
        for name, subset in (('oaml/ir50-oaml_test-ijbc.py', 'IJBC'),
                             ('oaml/ir50-oaml_test-ijbb.py', 'IJBB'),
                             ('oaml/ir101-oaml_test-ijbc.py', 'IJBC'),
                             ('oaml/ir101-oaml_test-ijbb.py', 'IJBB')):
            with self.subTest(config=name):
                cfg = load_config(osp.join(ROOT, 'configs', name))
                ds, ev = cfg.test_dataloader.dataset, cfg.test_evaluator
                self.assertEqual(cfg.test_cfg.type, 'FaceTestLoop')
                self.assertEqual((ds.type, ds.subset), ('IJBDataset', subset))
                self.assertEqual((ev.type, ev.subset), ('IJBMetric', subset))
                self.assertEqual(ds.data_root, ev.data_root)
                self.assertEqual(ds.data_root, cfg.test_data_root)
                self.assertTrue(ds.data_root.endswith(subset))
                self.assertEqual(ev.dataset_name, subset.lower())
                self.assertEqual(tuple(ev.branches),
                                 ('adaface', 'qaconv', 'fused'))
                self.assertEqual(tuple(ev.fuse_weights), (0.5, 0.5))
                self.assertEqual(ds.pipeline[0]['type'], 'AlignFace5Points')
                prefix = subset.lower()
                for f in list(ev.gallery_files) + [ev.probe_file]:
                    self.assertTrue(f.startswith(f'meta/{prefix}_1N_'), f)
                self.assertTrue(cfg.model.test_cfg.return_feature_maps)
                self.assertFalse(cfg.test_dataloader.sampler.shuffle)


class TestDataRootOverrides(unittest.TestCase):
    """One ``--cfg-options`` key per data root moves every copy of it."""

    def test_one_option_per_root(self):
        cfg = load_config(osp.join(ROOT, 'configs', 'oaml',
                                   'ir50-oaml_test-ijbc.py'))
        before = copy.deepcopy(cfg._cfg_dict.to_dict())
        merge_cfg_options(cfg, {
            'data_root': '/mnt/ms1m',
            'val_data_root': '/mnt/bins',
            'occlusion_data_root': '/mnt/niqab',
            'test_data_root': '/mnt/IJB/IJBC',
        })
        self.assertEqual(cfg.train_dataloader.dataset.data_root, '/mnt/ms1m')
        self.assertEqual({d.dataset.data_root for d in cfg.val_dataloader},
                         {'/mnt/bins'})
        self.assertEqual(
            cfg.custom_hooks[0].occluded_dataloader.dataset.data_root,
            '/mnt/niqab')
        self.assertEqual(cfg.test_dataloader.dataset.data_root, '/mnt/IJB/IJBC')
        self.assertEqual(cfg.test_evaluator.data_root, '/mnt/IJB/IJBC')
        # Nothing outside the roots' sections changed.
        after = cfg._cfg_dict.to_dict()
        for key in before:
            if key not in ROOT_SCOPES and not any(
                    key in s for s in ROOT_SCOPES.values()):
                self.assertEqual(after[key], before[key], key)
        # Still buildable after the override.
        ds = copy.deepcopy(cfg.test_dataloader.dataset)
        ds['lazy_init'] = True
        self.assertEqual(DATASETS.build(ds).paths['tid_mid'],
                         '/mnt/IJB/IJBC/meta/ijbc_face_tid_mid.txt')

    def test_shared_default_folder_stays_apart(self):
        # train.rec and the .bin sets share data/faces_emore by default: moving
        # the training set must not move the validation sets.
        cfg = load_config(osp.join(ROOT, 'configs', 'oaml',
                                   'ir50-oaml_4xb128_ms1mv2.py'))
        self.assertEqual(cfg.data_root, cfg.val_data_root)
        merge_cfg_options(cfg, {'data_root': '/mnt/ms1m'})
        self.assertEqual(cfg.train_dataloader.dataset.data_root, '/mnt/ms1m')
        self.assertEqual(cfg.val_dataloader[0].dataset.data_root,
                         'data/faces_emore')

    def test_synthface_roots_as_documented(self):
        # docs/data_layout.md "SynthFace configs": every root defaults to
        # data/synthface; occlusion_data_root moves the occlusion stream's clean
        # part (X/train) too, data_root moves the main stream only.
        for path in (osp.join(ROOT, 'configs', 'synthface',
                              'oaml_ir18_synthface.py'),
                     osp.join(STUDY_CONFIGS, 'oaml_ir18_synthface_randocc.py'),
                     osp.join(STUDY_CONFIGS, 'oaml_ir18_synthface_msocc.py'),
                     osp.join(STUDY_CONFIGS, 'oaml_ir18_synthface_adasched.py')):
            with self.subTest(config=path):
                self._check_synthface_roots(path)

    def _check_synthface_roots(self, path):
        def roots(opts):
            cfg = merge_cfg_options(load_config(path), opts)
            hook = next(h for h in cfg.custom_hooks
                        if h.type == 'DualLoaderHook')
            return dict(
                train=[d.data_root for d in cfg.train_dataloader.dataset.datasets],
                occluded=hook.occluded_dataloader.dataset.data_root,
                clean=hook.clean_dataloader.dataset.data_root,
                val={d.data_root for d in cfg.val_dataloader.dataset.datasets},
                test={d.data_root for d in cfg.test_dataloader.dataset.datasets})

        base = dict(train=['data/synthface/train', 'data/synthface/occluded'],
                    occluded='data/synthface/occluded',
                    clean='data/synthface/train', val={'data/synthface/val'},
                    test={'data/synthface/val'})
        self.assertEqual(roots({}), base)
        self.assertEqual(roots({'data_root': '/X'}), dict(
            base, train=['/X/train', '/X/occluded']))
        self.assertEqual(roots({'occlusion_data_root': '/X'}), dict(
            base, occluded='/X/occluded', clean='/X/train'))
        self.assertEqual(roots({'val_data_root': '/X'}), dict(base, val={'/X/val'}))
        self.assertEqual(roots({'test_data_root': '/X'}),
                         dict(base, test={'/X/val'}))

    def test_synthface_randocc_differs_only_by_random_occluders(self):
        # Capability 1 of the occlusion study as an ablation: RandomOcclusion in the
        # main pipelines (after the medical masks) and in the occlusion stream's clean
        # part, whose masks the hook keeps; nothing else changes.
        def strip(cfg):
            cfg = copy.deepcopy(cfg.to_dict())
            cfg.pop('random_occlusion', None)
            cfg.pop('filename', None)
            # The variable custom_hooks is made of (its copy there is walked).
            cfg.pop('occlusion_stream', None)
            found = []

            def walk(x):
                if isinstance(x, dict):
                    if isinstance(x.get('pipeline'), list):
                        found.append([t['type'] for t in x['pipeline']])
                    x.pop('clean_occluders', None)
                    for k, v in x.items():
                        if isinstance(v, list):
                            x[k] = v = [t for t in v if not (
                                isinstance(t, dict)
                                and t.get('type') == 'RandomOcclusion')]
                        walk(v)
                elif isinstance(x, (list, tuple)):
                    for v in x:
                        walk(v)

            walk(cfg)
            return cfg, found

        folder = osp.join(ROOT, 'configs', 'synthface')
        base, _ = strip(load_config(osp.join(folder, 'oaml_ir18_synthface.py')))
        cfg = load_config(osp.join(STUDY_CONFIGS,
                                   'oaml_ir18_synthface_randocc.py'))
        stripped, pipelines = strip(cfg)
        for key in set(base) | set(stripped):
            self.assertEqual(stripped.get(key), base.get(key), key)
        main = [t['type'] for t in cfg.train_dataloader.dataset.datasets[0].pipeline]
        self.assertEqual(main.index('RandomOcclusion'),
                         main.index('MedicalMaskOcclusion') + 1)
        hook = next(h for h in cfg.custom_hooks if h.type == 'DualLoaderHook')
        self.assertEqual(list(hook.clean_occluders), ['RandomOcclusion'])
        self.assertIn('RandomOcclusion',
                      [t['type'] for t in hook.clean_dataloader.dataset.pipeline])
        # main (twice: clean and occluded part) + the stream's clean part
        self.assertEqual(sum('RandomOcclusion' in p for p in pipelines), 3)

    def test_synthface_msocc_and_adasched_differ_only_as_documented(self):
        # The multi-scale occlusion head: its neck and 112x112 masks (PackFaceInputs
        # grid) in the main pipelines and the stream's occluded part; the loss-split
        # schedule: one more hook. Nothing else changes.
        def plain(name):
            folder = osp.join(ROOT, 'configs', 'synthface') if name == \
                'oaml_ir18_synthface.py' else STUDY_CONFIGS
            cfg = copy.deepcopy(load_config(osp.join(folder, name)).to_dict())
            cfg.pop('filename', None)
            return cfg

        def strip_grid(x):
            if isinstance(x, dict):
                if x.get('type') == 'PackFaceInputs':
                    self.assertEqual(tuple(x.pop('grid', (112, 112))), (112, 112))
                for v in x.values():
                    strip_grid(v)
            elif isinstance(x, (list, tuple)):
                for v in x:
                    strip_grid(v)

        base = plain('oaml_ir18_synthface.py')
        ms = plain('oaml_ir18_synthface_msocc.py')
        self.assertEqual(ms['model'].pop('neck')['type'], 'MultiScaleOcclusionHead')
        self.assertEqual(ms.pop('pixel_grid'), (112, 112))
        ms.pop('train_pipeline')
        strip_grid(ms)
        base_ms = copy.deepcopy(base)
        base_ms['model'].pop('neck')
        base_ms.pop('train_pipeline')
        strip_grid(base_ms)
        for key in set(base_ms) | set(ms):
            self.assertEqual(ms.get(key), base_ms.get(key), key)
        sched = plain('oaml_ir18_synthface_adasched.py')
        hooks = [h for h in sched['custom_hooks']
                 if h['type'] != 'LossWeightScheduleHook']
        self.assertEqual(len(hooks), len(sched['custom_hooks']) - 1)
        sched['custom_hooks'] = hooks
        for key in set(base) | set(sched):
            self.assertEqual(sched.get(key), base.get(key), key)

    def test_explicit_key_still_wins(self):
        cfg = load_config(osp.join(ROOT, 'configs', 'oaml',
                                   'ir50-oaml_4xb128_ms1mv2.py'))
        merge_cfg_options(cfg, {
            'data_root': '/a',
            'train_dataloader.dataset.data_root': '/b',
            'train_dataloader.num_workers': 1,
        })
        self.assertEqual(cfg.train_dataloader.dataset.data_root, '/b')
        self.assertEqual(cfg.train_dataloader.num_workers, 1)

    def test_paths_below_the_root_move_too(self):
        from mmengine.config import Config
        cfg = Config(dict(val_data_root='data/x', val_dataloader=[dict(
            dataset=dict(ann_file='data/x/lfw.bin', other='data/xy'))]))
        merge_cfg_options(cfg, {'val_data_root': '/m/'})
        ds = cfg.val_dataloader[0].dataset
        self.assertEqual(ds.ann_file, '/m/lfw.bin')
        self.assertEqual(ds.other, 'data/xy')


class TestSynthFaceVariants(unittest.TestCase):
    """A SynthFace variant differs from its base only where its header says.

    The variants list the base's hook variables (``margin_warmup``,
    ``occlusion_stream``) or a changed copy of them instead of repeating the
    hooks, so a change to the base reaches every variant.
    """

    def _plain(self, path):
        cfg = copy.deepcopy(load_config(path).to_dict())
        cfg.pop('filename', None)
        return cfg

    def _assert_only(self, variant, base, changed):
        for key in sorted(set(variant) | set(base)):
            if key not in changed:
                self.assertEqual(variant.get(key), base.get(key), key)

    def test_hooks_are_the_variables(self):
        found = []
        for path in CONFIGS:
            if not osp.basename(path).startswith('oaml_ir18_synthface'):
                continue
            cfg = load_config(path)
            hooks = {h.type: h for h in cfg.custom_hooks}
            self.assertEqual(hooks['MarginWarmupHook'], cfg.margin_warmup, path)
            if 'DualLoaderHook' in hooks:
                # The variable is what runs, a variant's own change included.
                self.assertEqual(hooks['DualLoaderHook'], cfg.occlusion_stream,
                                 path)
                found.append(osp.basename(path))
        for name in ('oaml_ir18_synthface.py', 'oaml_ir18_synthface_gs.py',
                     'oaml_ir18_synthface_msocc.py',
                     'oaml_ir18_synthface_randocc.py',
                     'oaml_ir18_synthface_adasched.py'):
            self.assertIn(name, found)

    def test_graph_sampling_changes_sampler_and_adds_hook(self):
        base = self._plain(osp.join(ROOT, 'configs', 'synthface',
                                    'oaml_ir18_synthface.py'))
        gs = self._plain(osp.join(ROOT, 'configs', 'synthface',
                                  'oaml_ir18_synthface_gs.py'))
        self.assertEqual(gs['custom_hooks'], base['custom_hooks'] + [
            dict(type='GraphSamplerHook', batch_size=64)])
        self.assertEqual(gs['train_dataloader'].pop('sampler'), dict(
            type='GraphSampler', batch_size=32, num_instances=4))
        base['train_dataloader'].pop('sampler')
        self._assert_only(gs, base, {'custom_hooks'})

    def test_controls_keep_only_the_margin_warmup(self):
        folder = osp.join(ROOT, 'configs', 'synthface')
        demo = self._plain(osp.join(folder, 'oaml_ir18_synthface.py'))
        novis = self._plain(osp.join(STUDY_CONFIGS,
                                     'oaml_ir18_synthface_novis.py'))
        seg = self._plain(osp.join(folder, 'oaml_ir18_synthface_segmenter.py'))
        for cfg in (novis, seg):
            self.assertEqual(cfg['custom_hooks'], [demo['margin_warmup']])
        self.assertIsNone(novis['model']['neck'])
        self._assert_only(novis, demo, {'model', 'custom_hooks',
                                        'test_evaluator'})
        sched = self._plain(osp.join(
            STUDY_CONFIGS, 'oaml_ir18_synthface_segmenter_adasched.py'))
        self.assertEqual(sched['custom_hooks'], [
            demo['margin_warmup'],
            dict(type='LossWeightScheduleHook', key='adaface', start=0.1,
                 end=0.5, complement='qaconv')])
        self._assert_only(sched, seg, {'custom_hooks'})

    def test_real_segmenter_adds_real_faces_and_look(self):
        base = self._plain(osp.join(ROOT, 'configs', 'synthface',
                                    'occlusion_segmenter_synthface.py'))
        real = self._plain(osp.join(STUDY_CONFIGS,
                                    'occlusion_segmenter_synthface_real.py'))
        self._assert_only(real, base, {
            'real_root', 'real_look', 'max_iters', 'occluded_pipeline',
            'clean_pipeline', 'real_pipeline', 'occluded_set', 'clean_set',
            'train_dataloader', 'param_scheduler', 'train_cfg'})
        look = real['real_look']
        for name in ('occluded_pipeline', 'clean_pipeline'):
            first, *rest = real[name]
            self.assertEqual(first, dict(base[name][0], **look), name)
            self.assertEqual(rest, base[name][1:], name)
        drawn, mine = base['train_dataloader'], real['train_dataloader']
        datasets = mine['dataset'].pop('datasets')
        self.assertEqual(datasets[:2],
                         [real['occluded_set'], real['clean_set']])
        occluded, clean = drawn['dataset'].pop('datasets')
        occluded['dataset']['pipeline'] = real['occluded_pipeline']
        clean['pipeline'] = real['clean_pipeline']
        self.assertEqual(datasets[:2], [occluded, clean])
        self.assertEqual(datasets[2]['dataset']['type'], 'FaceImageFolder')
        self.assertEqual(mine, drawn)
        self.assertEqual(real['max_iters'], 800)
        self.assertEqual(real['train_cfg'], dict(base['train_cfg'],
                                                 max_iters=800))
        self.assertEqual(real['param_scheduler'], [
            dict(base['param_scheduler'][0], total_steps=800)])


if __name__ == '__main__':
    unittest.main()
