"""Data tools: contact sheets, visibility/quality filtering into list files, review."""
import contextlib
import io
import os
import os.path as osp
import sys
import tempfile
import unittest

import cv2
import numpy as np

from oaml_mm.datasets import (FaceImageFolder, OcclusionMaskDataset,
                              write_occlusion_mask_sample)
from oaml_mm.datasets.curation import (REVIEW_COLUMNS, embed_dataset,
                                       image_quality, list_entry, review_pairs,
                                       sample_stats, write_filtered_list,
                                       write_review_list)
from oaml_mm.errors import ConfigError
from oaml_mm.models.detectors.face_detector import FaceDetections
from tests.test_apis.helpers import TINY_MODEL, face, write_checkpoint

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
for sub in ('analysis', 'dataset_converters'):
    sys.path.insert(0, osp.join(ROOT, 'tools', sub))
import browse_dataset  # noqa: E402
import filter_dataset  # noqa: E402
import review_dataset  # noqa: E402

# (name, label, visible rows of 112, sharp?)
SAMPLES = [('a/0', 0, 112, True), ('a/1', 0, 56, True), ('b/0', 1, 10, True),
           ('b/1', 1, 112, False), ('c/0', 2, 112, True), ('c/1', 2, 84, True)]


def _write_set(root):
    with open(osp.join(root, 'labels.txt'), 'w') as f:
        for i, (name, label, rows, sharp) in enumerate(SAMPLES):
            img = face(i) if sharp else np.full((112, 112, 3), 120, np.uint8)
            mask = np.zeros((112, 112), np.float32)
            mask[:rows] = 1
            write_occlusion_mask_sample(root, name, img, mask)
            f.write(f'{name} {label}\n')
    cfg = osp.join(root, 'cfg.py')
    with open(cfg, 'w') as f:
        f.write(f'default_scope = "oaml_mm"\nmodel = {TINY_MODEL!r}\n'
                'train_dataloader = dict(dataset=dict('
                f'type="OcclusionMaskDataset", data_root={root!r}, '
                'pipeline=[dict(type="PackFaceInputs")]))\n')
    return cfg


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


class TestDataTools(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name
        self.cfg = _write_set(self.root)

    def tearDown(self):
        self.tmp.cleanup()

    def test_stats(self):
        ds = OcclusionMaskDataset(data_root=self.root,
                                  pipeline=[dict(type='PackFaceInputs')])
        stats = sample_stats(ds)
        vis = [round(s['visibility'], 2) for s in stats]
        self.assertEqual(vis[0], 1.0)
        self.assertTrue(0.4 < vis[1] < 0.6)  # the top half visible
        self.assertLess(vis[2], 0.15)
        self.assertEqual(stats[3]['sharpness'], 0.0)
        self.assertGreater(stats[0]['sharpness'], 1)  # smooth, not flat
        self.assertEqual([s['label'] for s in stats], [0, 0, 1, 1, 2, 2])
        self.assertEqual(image_quality(np.full((4, 4, 3), 7, np.uint8))[
            'brightness'], 7.0)

    def test_filter_writes_readable_list(self):
        out = osp.join(self.root, 'kept.txt')
        code = _quiet(filter_dataset.main, [
            self.cfg, '--out', out, '--min-visibility', '0.4',
            '--min-sharpness', '1', '--stats', osp.join(self.root, 's.tsv')])
        self.assertEqual(code, 0)
        with open(out) as f:
            self.assertEqual(f.read().split('\n')[:-1],
                             ['a/0 0', 'a/1 0', 'c/0 2', 'c/1 2'])
        kept = OcclusionMaskDataset(data_root=self.root, ann_file='kept.txt')
        self.assertEqual(len(kept), 4)
        np.testing.assert_array_equal(kept.get_gt_labels(), [0, 0, 2, 2])
        with open(osp.join(self.root, 's.tsv')) as f:
            self.assertEqual(len(f.readlines()), 7)

    def test_filter_by_detector_confidence(self):
        ds = OcclusionMaskDataset(data_root=self.root,
                                  pipeline=[dict(type='PackFaceInputs')])

        def detector(img):
            # A stand-in detector: faces on bright images only, score = mean/255.
            self.assertEqual(img.shape, (112, 112, 3))
            score = float(img.mean()) / 255
            n = int(score > 0.3)
            return FaceDetections(np.zeros((n, 4), np.float32),
                                  np.full(n, score, np.float32),
                                  np.zeros((n, 5, 2), np.float32))

        stats = sample_stats(ds, detector=detector)
        want = [float(ds[i]['inputs'].float().mean()) / 255 for i in range(6)]
        for st, w in zip(stats, want):
            self.assertAlmostEqual(st['face_score'], w if w > 0.3 else 0.0, 5)
        ranked = sorted(st['face_score'] for st in stats)
        self.assertLess(ranked[2], ranked[3])
        threshold = (ranked[2] + ranked[3]) / 2  # no tie with any score
        out = osp.join(self.root, 'faces.txt')
        counts = write_filtered_list(ds, out, stats, min_face_score=threshold)
        self.assertEqual(counts['kept'], 3)
        self.assertEqual(counts['face_score'], 3)
        with self.assertRaises(ConfigError):
            write_filtered_list(ds, out, sample_stats(ds), min_face_score=0.5)

    def test_list_entry_formats(self):
        folder = osp.join(self.root, 'folder')
        for cls in ('x', 'y'):
            os.makedirs(osp.join(folder, cls))
            cv2.imwrite(osp.join(folder, cls, '0.jpg'), face(3))
        ds = FaceImageFolder(data_root=folder)
        self.assertEqual(list_entry(ds, 1), osp.join('y', '0.jpg') + ' 1')
        with self.assertRaises(ConfigError):
            list_entry(object(), 0)

    def test_browse_sheet(self):
        out = osp.join(self.root, 'sheet.png')
        self.assertEqual(_quiet(browse_dataset.main,
                                [self.cfg, '--out', out, '--num', '6',
                                 '--cols', '3']), 0)
        sheet = cv2.imread(out)
        self.assertEqual(sheet.shape, (2 * (112 + 14), 3 * 112, 3))
        plain = osp.join(self.root, 'plain.png')
        _quiet(browse_dataset.main, [self.cfg, '--out', plain, '--num', '6',
                                     '--cols', '3', '--no-mask'])
        plain = cv2.imread(plain)
        # tile 1 (half occluded) is tinted at its bottom, tile 0 is not
        self.assertFalse(np.array_equal(sheet[100:112, 112:224],
                                        plain[100:112, 112:224]))
        np.testing.assert_array_equal(sheet[:112, :112], plain[:112, :112])
        self.assertEqual(browse_dataset.main([self.cfg, '--split', 'test']), 2)

    def test_cfg_options_point_the_tools_at_the_data(self):
        # A config whose data set lives elsewhere: --cfg-options moves it, as
        # tools/train.py's does.
        moved = osp.join(self.root, 'moved.py')
        with open(self.cfg) as f, open(moved, 'w') as g:
            g.write(f.read().replace(repr(self.root), repr('/nonexistent')))
        opts = ['--cfg-options', f'train_dataloader.dataset.data_root={self.root}']
        sheet = osp.join(self.root, 'moved.png')
        with contextlib.redirect_stderr(io.StringIO()):
            self.assertEqual(_quiet(browse_dataset.main,
                                    [moved, '--out', sheet, '--num', '2']), 2)
        self.assertEqual(_quiet(browse_dataset.main,
                                [moved, '--out', sheet, '--num', '2'] + opts), 0)
        self.assertTrue(osp.isfile(sheet))
        kept = osp.join(self.root, 'moved_kept.txt')
        self.assertEqual(_quiet(filter_dataset.main,
                                [moved, '--out', kept] + opts), 0)
        with open(kept) as f:
            self.assertEqual(len(f.read().splitlines()), len(SAMPLES))
        ckpt = osp.join(self.root, 'tiny.pth')
        write_checkpoint(ckpt, calibration=None)
        review = osp.join(self.root, 'moved.tsv')
        self.assertEqual(_quiet(review_dataset.main,
                                [moved, ckpt, '--out', review] + opts), 0)
        self.assertTrue(osp.isfile(review))

    def test_measurement_tools_use_the_test_time_pipeline(self):
        # Given a training config, the tools once measured images after random
        # augmentation: a medical mask drawn on clean faces, random flips.
        train_cfg = osp.join(self.root, 'train_cfg.py')
        with open(train_cfg, 'w') as f:
            f.write(open(self.cfg).read().replace(
                'pipeline=[dict(type="PackFaceInputs")]',
                'pipeline=[dict(type="MedicalMaskOcclusion", prob=1.0), '
                'dict(type="FaceRandomFlip", prob=1.0), '
                'dict(type="PackFaceInputs")]'))
        from oaml_mm.datasets.curation import build_split_dataset
        from oaml_mm.utils import load_config
        ds = _quiet(build_split_dataset, load_config(train_cfg))
        self.assertEqual([type(t).__name__ for t in ds.pipeline.transforms],
                         ['PackFaceInputs'])
        shown = build_split_dataset(load_config(train_cfg),
                                    pipeline='configured')
        self.assertEqual(len(shown.pipeline.transforms), 3)  # browse: as is
        out = osp.join(self.root, 'kept.txt')
        code = _quiet(filter_dataset.main, [train_cfg, '--out', out,
                                            '--min-visibility', '0.99'])
        self.assertEqual(code, 0)
        with open(out) as f:  # the fully visible faces, no mask drawn
            self.assertEqual(f.read().split('\n')[:-1],
                             ['a/0 0', 'b/1 1', 'c/0 2'])
        # review_dataset embeds what is stored: an image and itself read
        # twice give one embedding (the flip would mirror it).
        ckpt = osp.join(self.root, 'tiny.pth')
        write_checkpoint(ckpt, calibration=None)
        review = osp.join(self.root, 'review.tsv')
        self.assertEqual(_quiet(review_dataset.main,
                                [train_cfg, ckpt, '--out', review,
                                 '--duplicate-cos', '0.99']), 0)
        plain = osp.join(self.root, 'review_plain.tsv')
        _quiet(review_dataset.main, [self.cfg, ckpt, '--out', plain,
                                     '--duplicate-cos', '0.99'])
        self.assertEqual(open(review).read(), open(plain).read())

    def test_review_pairs(self):
        rng = np.random.RandomState(0)
        centres = rng.randn(3, 16)
        emb = np.repeat(centres, 3, axis=0) + 0.05 * rng.randn(9, 16)
        labels = np.repeat([0, 1, 2], 3)
        emb[4] = emb[3]             # an exact duplicate within identity 1
        emb[8] = centres[0]         # identity 2's third image is a face of 0
        keys = [f'k{i}' for i in range(9)]
        rows = review_pairs(emb, labels, keys, duplicate_cos=0.999)
        self.assertEqual(rows[0]['kind'], 'duplicate')
        self.assertEqual((rows[0]['a'], rows[0]['b']), ('k3', 'k4'))
        self.assertAlmostEqual(rows[0]['score'], 1.0, places=5)
        mis = [r for r in rows if r['kind'] == 'mislabel']
        self.assertEqual([(r['a'], r['label_b']) for r in mis], [('k8', 0)])

    def test_embed_dataset_and_review_list(self):
        from oaml_mm.apis import FaceRecognizer
        ckpt = osp.join(self.root, 'tiny.pth')
        write_checkpoint(ckpt, calibration=None)
        model = FaceRecognizer(self.cfg, ckpt).model.eval()
        ds = OcclusionMaskDataset(data_root=self.root,
                                  pipeline=[dict(type='PackFaceInputs')])
        emb, keys, labels = embed_dataset(model, ds, batch_size=3, max_images=4)
        self.assertEqual(emb.dtype, np.float32)
        self.assertEqual(emb.shape[0], 4)
        self.assertTrue(np.isfinite(emb).all())
        self.assertEqual(len(keys), 4)
        self.assertEqual(labels.tolist(), [0, 0, 1, 1])
        out = osp.join(self.root, 'rows.tsv')
        write_review_list([dict(kind='duplicate', score=0.99, a='x', b='y',
                                label_a=0, label_b=0)], out)
        with open(out) as f:
            self.assertEqual(f.read().splitlines(),
                             ['\t'.join(REVIEW_COLUMNS),
                              'duplicate\t0.99\tx\ty\t0\t0'])

    def test_review_cli(self):
        ckpt = osp.join(self.root, 'tiny.pth')
        write_checkpoint(ckpt, calibration=None)
        out = osp.join(self.root, 'review.tsv')
        self.assertEqual(_quiet(review_dataset.main,
                                [self.cfg, ckpt, '--out', out,
                                 '--duplicate-cos', '0.99']), 0)
        with open(out) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[0].split('\t'),
                         ['kind', 'score', 'a', 'b', 'label_a', 'label_b'])


if __name__ == '__main__':
    unittest.main()
