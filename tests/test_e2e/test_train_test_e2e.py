"""The shipped configs end to end on tiny files in the real formats.

A tiny-width IR-18 config inherits ``configs/oaml/ir50-oaml_test-ijbc.py`` (so the
real data, validation, occlusion-stream and test sections are exercised) and shrinks
the model and batch. Data roots are moved with one ``--cfg-options`` key each, as
docs/data_layout.md tells users. Then: ``tools/train.py`` (one epoch, validation on
the five ``.bin`` sets) -> ``tools/test.py --out`` on IJB-C-format files ->
``tools/dist_test.sh ... 2`` on CPU, which must give the same numbers
(docs/evaluation.md: agreement to 1e-4, the fp16 map storage rounds differently when
per-rank accumulators are merged).
"""
import csv
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile
import unittest

import cv2
import numpy as np

from oaml_mm.datasets import (write_insightface_rec,
                              write_occlusion_mask_sample,
                              write_verification_bin)
from oaml_mm.datasets.transforms import ARCFACE_REF_POINTS
from tests.reliability._util import free_port

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
NUM_IDS = 8
VAL_SETS = ['lfw', 'cfp_fp', 'agedb_30', 'calfw', 'cplfw']
BRANCHES = ('adaface', 'qaconv', 'fused')
# Agreement of single- and 2-process evaluation (docs/evaluation.md).
DDP_TOL = 1e-4


def _face(label: int, rng: np.random.Generator, size: int = 112) -> np.ndarray:
    """An RGB image whose coarse pattern depends on the identity only."""
    base = np.random.default_rng(1000 + label).integers(0, 256, (4, 4, 3))
    img = cv2.resize(base.astype(np.uint8), (size, size),
                     interpolation=cv2.INTER_LINEAR).astype(np.int16)
    img += rng.integers(-20, 21, img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def _jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode('.jpg', cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def write_data(root: str) -> dict:
    """Write train .rec, five .bin sets, a niqab set and IJB-C files under root."""
    rng = np.random.default_rng(0)
    roots = dict(train=osp.join(root, 'faces'), val=osp.join(root, 'bins'),
                 niqab=osp.join(root, 'niqab'),
                 ijbc=osp.join(root, 'IJB_release', 'IJBC'))
    write_insightface_rec(
        roots['train'], [(_jpeg(_face(lab, rng)), lab) for lab in
                         range(NUM_IDS) for _ in range(4)], NUM_IDS)
    os.makedirs(roots['val'])
    for name in VAL_SETS:
        images, issame = [], []
        for p in range(10):  # 10-fold needs >= 10 pairs
            a, b = p % NUM_IDS, (p if p % 2 == 0 else p + 3) % NUM_IDS
            images += [_jpeg(_face(a, rng)), _jpeg(_face(b, rng))]
            issame.append(a == b)
        write_verification_bin(osp.join(roots['val'], f'{name}.bin'), images,
                               issame)
    for i in range(8):
        vis = np.ones((112, 112), np.float32)
        vis[56:, :] = 0.0  # the lower face is covered
        img = _face(i % NUM_IDS, rng)
        img[56:] = 40
        write_occlusion_mask_sample(roots['niqab'], f'{i:03d}', img, vis)

    # IJB-C: 6 templates of 2 subjects (+1 distractor), one or two media each.
    ijb = roots['ijbc']
    os.makedirs(osp.join(ijb, 'meta'))
    os.makedirs(osp.join(ijb, 'loose_crop'))
    templates = {1: 0, 2: 0, 3: 1, 4: 1, 5: 2, 6: 0}
    lmk = ARCFACE_REF_POINTS + 8.0  # faces in a 128x128 loose crop
    k = 0
    with open(osp.join(ijb, 'meta', 'ijbc_face_tid_mid.txt'), 'w') as f1, \
            open(osp.join(ijb, 'meta', 'ijbc_name_5pts_score.txt'), 'w') as f2:
        for tid, subject in templates.items():
            for media in range(2 if tid % 2 else 1):
                for _ in range(2):
                    name = f'{k}.jpg'
                    canvas = np.zeros((128, 128, 3), np.uint8)
                    canvas[8:120, 8:120] = _face(subject, rng)
                    with open(osp.join(ijb, 'loose_crop', name), 'wb') as f:
                        f.write(_jpeg(canvas))
                    f1.write(f'{name} {tid} {tid * 10 + media}\n')
                    pts = ' '.join(f'{v:.2f}' for v in lmk.reshape(-1))
                    f2.write(f'{name} {pts} 0.99\n')
                    k += 1
    pairs = [(a, b) for a in templates for b in templates if a < b]
    with open(osp.join(ijb, 'meta', 'ijbc_template_pair_label.txt'), 'w') as f:
        for a, b in pairs:
            f.write(f'{a} {b} {int(templates[a] == templates[b])}\n')
    rows = {'ijbc_1N_gallery_G1.csv': [(1, 0), (3, 1)],
            'ijbc_1N_gallery_G2.csv': [(5, 2)],
            'ijbc_1N_probe_mixed.csv': [(2, 0), (4, 1), (6, 0)]}
    for fname, items in rows.items():
        with open(osp.join(ijb, 'meta', fname), 'w') as f:
            f.write('TEMPLATE_ID,SUBJECT_ID,FILENAME\n')
            for tid, subject in items:
                f.write(f'{tid},{subject},x.jpg\n')
    return roots


TINY_CONFIG = """
_base_ = [{base!r}]
# Tiny IR-18 (width x0.25: 128-channel 7x7 maps, 32-d embedding), 8 identities.
model = dict(
    backbone=dict(depth=18, width_mult=0.25, embedding_size=32),
    neck=dict(in_channels=128, hidden_channels=16),
    head=dict(in_channels=32, num_classes={num_ids}),
    qaconv_head=dict(in_channels=128))
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False, pin_memory=False,
    sampler=dict(batch_size=8), dataset=dict(num_classes={num_ids}))
train_cfg = dict(max_epochs=1)
test_dataloader = dict(batch_size=5, num_workers=0)
default_hooks = dict(logger=dict(interval=1))
"""


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    env['PYTHON'] = sys.executable
    env['OMP_NUM_THREADS'] = '1'
    env['PORT'] = str(free_port())
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        env.pop(key, None)
    return env


class TestTrainValTestEndToEnd(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.roots = write_data(osp.join(cls.tmp.name, 'data'))
        cls.cfg = osp.join(cls.tmp.name, 'tiny_oaml_ijbc.py')
        with open(cls.cfg, 'w') as f:
            f.write(TINY_CONFIG.format(
                base=osp.join(ROOT, 'configs', 'oaml', 'ir50-oaml_test-ijbc.py'),
                num_ids=NUM_IDS))
        cls.work = osp.join(cls.tmp.name, 'work')
        # One key per data root, plus worker counts of the list entries.
        cls.options = [
            f'data_root={cls.roots["train"]}',
            f'val_data_root={cls.roots["val"]}',
            f'occlusion_data_root={cls.roots["niqab"]}',
            f'test_data_root={cls.roots["ijbc"]}',
            'custom_hooks.0.occluded_dataloader.num_workers=0',
        ] + [f'val_dataloader.{i}.num_workers=0' for i in range(len(VAL_SETS))]

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def _run(self, args, timeout=300):
        proc = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True,
                              text=True, timeout=timeout)
        self.assertEqual(proc.returncode, 0,
                         proc.stdout[-2000:] + proc.stderr[-4000:])
        return proc

    def test_train_validate_test_and_dist_test(self):
        self._run([sys.executable, 'tools/train.py', self.cfg, '--work-dir',
                   self.work, '--cfg-options'] + self.options)
        ckpt = osp.join(self.work, 'epoch_1.pth')
        self.assertTrue(osp.isfile(ckpt))
        # Validation ran on every .bin set and branch.
        val = {}
        for dirpath, _, files in os.walk(self.work):
            if 'scalars.json' in files:
                with open(osp.join(dirpath, 'scalars.json')) as f:
                    for line in f:
                        val.update(json.loads(line))
        for name in VAL_SETS:
            for branch in BRANCHES:
                acc = val.get(f'{name}/{branch}/accuracy')
                self.assertIsNotNone(acc, f'{name}/{branch}/accuracy')
                self.assertTrue(0.0 <= acc <= 100.0)

        out1 = osp.join(self.tmp.name, 'single', 'metrics.json')
        proc = self._run([
            sys.executable, 'tools/test.py', self.cfg, ckpt, '--work-dir',
            osp.join(self.tmp.name, 'test1'), '--out', out1, '--cfg-options'
        ] + self.options)
        with open(out1) as f:
            one = json.load(f)
        for branch in BRANCHES:
            for metric in ('TAR@FAR=1e-01', 'AUC', 'EER', '1N_rank1'):
                self.assertIn(f'ijbc/{branch}/{metric}', one)
        self.assertTrue(all(k.count('/') == 2 for k in one), sorted(one))
        # The report: table on stdout, CSV beside --out, ROC curve PNG.
        self.assertIn('ijbc', proc.stdout)
        with open(osp.splitext(out1)[0] + '.csv') as f:
            rows = list(csv.DictReader(f))
        # The model predicts visibility, so the end-of-training calibration
        # fitted the visibility-aware fusion: the test reports it too.
        self.assertEqual(sorted(r['branch'] for r in rows),
                         sorted(BRANCHES + ('fused_vis', )))
        for metric in ('TAR@FAR=1e-01', 'AUC', 'EER'):
            self.assertIn(f'ijbc/fused_vis/{metric}', one)
        self.assertTrue(osp.isfile(osp.join(self.tmp.name, 'test1',
                                            'roc_ijbc.png')))

        out2 = osp.join(self.tmp.name, 'dist', 'metrics.json')
        self._run([
            'bash', 'tools/dist_test.sh', self.cfg, ckpt, '2', '--work-dir',
            osp.join(self.tmp.name, 'test2'), '--out', out2, '--cfg-options'
        ] + self.options)
        with open(out2) as f:
            two = json.load(f)
        self.assertEqual(set(two), set(one))
        for key, value in one.items():
            self.assertAlmostEqual(two[key], value, delta=DDP_TOL, msg=key)


class TestMissingDataRoot(unittest.TestCase):

    def test_train_names_the_missing_file_without_a_traceback(self):
        with tempfile.TemporaryDirectory() as tmp:
            missing = osp.join(tmp, 'no_such_folder')
            proc = subprocess.run([
                sys.executable, 'tools/train.py', 'configs/oaml_ir50.py',
                '--work-dir', osp.join(tmp, 'work'), '--cfg-options',
                f'data_root={missing}'
            ], cwd=ROOT, env=_env(), capture_output=True, text=True,
                timeout=300)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(f'MissingFileError: {missing}/train.rec', proc.stderr)
        self.assertNotIn('Traceback', proc.stderr)


if __name__ == '__main__':
    unittest.main()
