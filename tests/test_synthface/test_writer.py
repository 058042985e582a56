import filecmp
import os
import os.path as osp
import tempfile
import unittest

import numpy as np

from oaml_mm.datasets.ijb import IJBDataset
from oaml_mm.datasets.mx_face_dataset import MXFaceDataset
from oaml_mm.datasets.occlusion_mask_dataset import OcclusionMaskDataset
from oaml_mm.datasets.verification_bin import VerificationBinDataset
from oaml_mm.errors import ConfigError
from oaml_mm.evaluation.metrics.ijb_metric import read_1n_csv
from oaml_mm.synthface import (MASKED_PROBE_TYPES, SynthFaceConfig,
                               build_pairs, contact_sheet, generate_synthface,
                               manifest_matches, read_manifest, stream_rng)

TINY = SynthFaceConfig(identities=6, images_per_id=3, test_identities=6,
                       occluded_per_id=2, val_images_per_id=4, val_pairs=40,
                       ijbc_subjects=3, ijbc_probe_templates=1)


def _all_files(root):
    out = []
    for d, _, files in os.walk(root):
        out += [osp.relpath(osp.join(d, f), root) for f in files]
    return sorted(out)


class TestGenerate(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.root = osp.join(cls.tmp.name, 'a')
        cls.manifest = generate_synthface(cls.root, TINY, workers=1, log=None)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_same_bytes_for_any_workers_and_new_bytes_for_new_seed(self):
        other = osp.join(self.tmp.name, 'b')
        generate_synthface(other, TINY, workers=2, log=None)
        files = _all_files(self.root)
        self.assertEqual(files, _all_files(other))
        self.assertGreater(len(files), 40)
        _, mismatch, errors = filecmp.cmpfiles(self.root, other, files, shallow=False)
        self.assertEqual((mismatch, errors), ([], []))
        seed2 = osp.join(self.tmp.name, 'c')
        generate_synthface(seed2, SynthFaceConfig(**{**TINY.__dict__, 'seed': 1}),
                           workers=1, log=None)
        for f in ('train/train.rec', 'val/clean.bin', 'ijbc/loose_crop/1.jpg'):
            self.assertFalse(filecmp.cmp(osp.join(self.root, f), osp.join(seed2, f),
                                         shallow=False), f)

    def test_train_rec_readable(self):
        ds = MXFaceDataset(data_root=osp.join(self.root, 'train'))
        self.assertEqual(len(ds), 18)
        np.testing.assert_array_equal(ds.get_gt_labels(), np.repeat(np.arange(6), 3))
        self.assertEqual(ds[4]['img'].shape, (112, 112, 3))
        self.assertEqual(self.manifest['counts']['train_images'], 18)

    def test_occluded_set_readable(self):
        ds = OcclusionMaskDataset(data_root=osp.join(self.root, 'occluded'))
        self.assertEqual(len(ds), 12)
        labels = ds.get_gt_labels()
        self.assertTrue(np.all((labels >= 0) & (labels < TINY.identities)))
        s = ds[0]
        self.assertEqual(s['visibility_mask'].shape, (112, 112))
        self.assertTrue(set(np.unique(s['visibility_mask'])) <= {0.0, 1.0})
        self.assertLess(s['visibility_mask'].mean(), 1.0)

    def test_verification_bins(self):
        val = osp.join(self.root, 'val')
        for name in ('clean', 'masked', 'occluded'):
            ds = VerificationBinDataset(ann_file=f'{name}.bin', data_root=val)
            issame = ds.issame
            self.assertEqual(len(issame), 40)
            self.assertEqual(issame.sum(), 20)
            # LFW order: per fold, genuine pairs then impostors
            np.testing.assert_array_equal(issame[:4], [True, True, False, False])
            vis = np.load(osp.join(val, f'{name}.vis.npy'))
            self.assertEqual((vis.shape, vis.dtype), ((80, 7, 7), np.float16))
            labels = np.load(osp.join(val, f'{name}.labels.npy'))
            np.testing.assert_array_equal(labels[0::2] == labels[1::2], issame)
            # test identities only: disjoint from the training labels 0..5
            self.assertTrue(np.all(labels >= TINY.identities))
            with open(osp.join(val, f'{name}.types.txt')) as f:
                types = f.read().split()
            self.assertEqual(len(types), 80)
            if name == 'clean':
                self.assertTrue(np.all(vis == 1) and set(types) == {'none'})
            if name == 'masked':
                self.assertEqual(set(types[0::2]), {'none'})
                self.assertTrue(set(types[1::2]) <= set(MASKED_PROBE_TYPES))
                self.assertTrue(np.all(vis[0::2] == 1))
                self.assertTrue(np.all(vis[1::2].reshape(40, -1).min(1) < 0.5))
            if name == 'occluded':
                self.assertNotIn('none', types)
            self.assertEqual(ds[1]['img'].shape, (112, 112, 3))

    def test_ijbc(self):
        root = osp.join(self.root, 'ijbc')
        ds = IJBDataset(data_root=root, subset='IJBC')
        self.assertEqual(len(ds), self.manifest['counts']['ijbc_images'])
        t1, t2, label = ds.template_pairs()
        # 3 gallery x 3 probe templates, one genuine per subject
        self.assertEqual((len(label), int(label.sum())), (9, 3))
        for i in range(len(ds)):
            s = ds[i]
            h, w = s['img'].shape[:2]
            self.assertGreaterEqual(min(h, w), 120)
            lm = s['landmarks']
            self.assertTrue(np.all(lm >= -2) and np.all(lm[:, 0] <= w + 2) and
                            np.all(lm[:, 1] <= h + 2))
            self.assertTrue(0 < s['faceness'] <= 1)
        meta = osp.join(root, 'meta')
        rows = {}
        for part in ('gallery_G1', 'gallery_G2', 'probe_mixed'):
            with open(osp.join(meta, f'ijbc_1N_{part}.csv')) as f:
                lines = f.read().split()
            self.assertTrue(lines[0].startswith('TEMPLATE_ID,SUBJECT_ID,FILENAME'))
            rows[part] = [r.split(',') for r in lines[1:]]
            # the metric's own reader takes them
            tids_csv, subj_csv = read_1n_csv(osp.join(meta, f'ijbc_1N_{part}.csv'))
            self.assertEqual(len(tids_csv), len(set(tids_csv)))
            self.assertTrue(np.all(subj_csv >= TINY.identities))
        subj = {p: {int(r[1]) for r in rows[p]} for p in rows}
        self.assertFalse(subj['gallery_G1'] & subj['gallery_G2'])
        self.assertEqual(subj['gallery_G1'] | subj['gallery_G2'], subj['probe_mixed'])
        self.assertTrue(all(s >= TINY.identities for s in subj['probe_mixed']))
        # several media per template somewhere
        tids, mids = ds._tids, ds._mids
        self.assertGreater(max(len(set(mids[tids == t])) for t in set(tids)), 1)

    def test_manifest_skip_and_refuse(self):
        rec = osp.join(self.root, 'train', 'train.rec')
        before = os.stat(rec).st_mtime_ns
        man = generate_synthface(self.root, TINY, workers=1, log=None)
        self.assertEqual(os.stat(rec).st_mtime_ns, before)
        self.assertEqual(man, read_manifest(self.root))
        self.assertEqual(man['config']['seed'], 0)
        # a manifest from other code or other arguments does not match
        path = osp.join(self.root, 'synthface.json')
        with open(path) as f:
            text = f.read()
        try:
            with open(path, 'w') as f:
                f.write(text.replace(man['code_hash'], '0' * 16))
            self.assertFalse(manifest_matches(self.root, TINY))
        finally:
            with open(path, 'w') as f:
                f.write(text)
        self.assertTrue(manifest_matches(self.root, TINY))
        self.assertFalse(manifest_matches(
            self.root, SynthFaceConfig(**{**TINY.__dict__, 'nuisance': 0.6})))
        foreign = osp.join(self.tmp.name, 'foreign')
        os.makedirs(osp.join(foreign, 'train'))
        with self.assertRaises(ConfigError):
            generate_synthface(foreign, TINY, workers=1, log=None)


class TestPairsAndPreview(unittest.TestCase):

    def test_build_pairs(self):
        labels = np.repeat(np.arange(5), 3)
        ok = np.ones(15, bool)
        masked = np.arange(15) % 3 == 2
        pairs, issame = build_pairs(labels, ok, masked, 20, stream_rng(0, 1))
        self.assertEqual(len(set(map(tuple, pairs))), 20)
        np.testing.assert_array_equal(labels[pairs[:, 0]] == labels[pairs[:, 1]],
                                      issame)
        self.assertTrue(np.all(masked[pairs[:, 1]]))
        self.assertTrue(np.all(pairs[:, 0] != pairs[:, 1]))
        with self.assertRaises(ConfigError):
            build_pairs(labels, ok, masked, 400, stream_rng(0, 1))
        with self.assertRaisesRegex(ConfigError, 'multiple of 20'):
            build_pairs(labels, ok, masked, 30, stream_rng(0, 1))

    def test_config_checked(self):
        for bad in (dict(identities=1), dict(val_pairs=10), dict(nuisance=-0.1),
                    dict(images_per_id=2.5)):
            with self.assertRaises(ConfigError):
                SynthFaceConfig(**bad)
        # 55 pairs once wrote 40 without a word: refused, naming usable values.
        with self.assertRaisesRegex(ConfigError, r'multiple of 20.*got 55; use '
                                    r'40 or 60'):
            SynthFaceConfig(val_pairs=55)
        self.assertEqual(SynthFaceConfig(val_pairs=60).val_pairs, 60)

    def test_cli_refuses_val_pairs(self):
        import contextlib
        import io
        import runpy
        tool = osp.join(osp.dirname(osp.dirname(osp.dirname(
            osp.abspath(__file__)))), 'tools', 'dataset_converters',
            'make_synthface.py')
        main = runpy.run_path(tool)['main']
        with tempfile.TemporaryDirectory() as tmp:
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = main(['--out', osp.join(tmp, 'sf'), '--val-pairs', '55'])
            self.assertEqual(code, 2)
            self.assertIn('use 40 or 60', err.getvalue())
            self.assertFalse(osp.exists(osp.join(tmp, 'sf')))

    def test_cli_checks_pairs_before_writing_and_reclaims_its_folder(self):
        # Before: too few validation images for --val-pairs failed after
        # train/, occluded/ and val/ were written, and --force then refused
        # the folder as "not a SynthFace folder".
        import contextlib
        import io
        import runpy
        tool = osp.join(osp.dirname(osp.dirname(osp.dirname(
            osp.abspath(__file__)))), 'tools', 'dataset_converters',
            'make_synthface.py')
        main = runpy.run_path(tool)['main']
        argv = ['--identities', '2', '--images-per-id', '1',
                '--test-identities', '6', '--val-images-per-id', '2',
                '--val-pairs', '20', '--workers', '1', '--heldout-identities',
                '0', '--calib-identities', '0', '--ijbc-subjects', '1']
        with tempfile.TemporaryDirectory() as tmp:
            out = osp.join(tmp, 'sf')
            for extra in ([], ['--force']):
                err = io.StringIO()
                with contextlib.redirect_stderr(err), \
                        contextlib.redirect_stdout(io.StringIO()):
                    code = main(['--out', out] + argv + extra)
                self.assertEqual(code, 2)
                self.assertRegex(err.getvalue(),
                                 r'^make_synthface: SynthFace: too few images '
                                 r'to draw 20 distinct pairs.*--val-pairs.*'
                                 r'--val-images-per-id')
                self.assertEqual(os.listdir(out), ['.synthface-partial'])
                os.makedirs(osp.join(out, 'train'))  # a half-written run
            # A folder the tool did not start is still refused.
            foreign = osp.join(tmp, 'foreign')
            os.makedirs(osp.join(foreign, 'train'))
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                self.assertEqual(main(['--out', foreign, '--force'] + argv), 2)
            self.assertIn('not a SynthFace folder', err.getvalue())
            self.assertEqual(os.listdir(foreign), ['train'])

    def test_cli_refuses_a_preview_it_cannot_write(self):
        # Before: cv2.imwrite failed silently on .txt and "preview written" was
        # printed with exit code 0.
        import contextlib
        import io
        import runpy

        import cv2
        tool = osp.join(osp.dirname(osp.dirname(osp.dirname(
            osp.abspath(__file__)))), 'tools', 'dataset_converters',
            'make_synthface.py')
        main = runpy.run_path(tool)['main']
        with tempfile.TemporaryDirectory() as tmp:
            err, out = io.StringIO(), io.StringIO()
            with contextlib.redirect_stderr(err), \
                    contextlib.redirect_stdout(out):
                code = main(['--preview', osp.join(tmp, 'p.txt')])
            self.assertEqual(code, 2)
            self.assertIn("--preview '", err.getvalue())
            self.assertIn('OpenCV cannot write .txt pictures', err.getvalue())
            self.assertEqual(out.getvalue(), '')
            png = osp.join(tmp, 'sub', 'p.png')
            with contextlib.redirect_stdout(out):
                code = main(['--heldout-preview', png, '--preview-rows', '1'])
            self.assertEqual(code, 0)
            self.assertEqual(cv2.imread(png).shape[0], 112)

    def test_contact_sheet(self):
        sheet = contact_sheet(identities=2, clean_per_id=1)
        # per row: 1 clean + 5 occluded, each with a mask-tinted copy
        self.assertEqual(sheet.shape, (224, 112 * 11, 3))
