"""occlusion_report: tables and pictures from a tiny model on a tiny side-file .bin."""
import contextlib
import io
import os.path as osp
import sys
import tempfile
import unittest

import numpy as np
import torch

from oaml_mm.datasets import VerificationBinDataset, write_verification_bin
from oaml_mm.registry import MODELS
from oaml_mm.visualization.occlusion_report import (collect_predictions,
                                                    occlusion_tables)
from tests.test_apis.helpers import TINY_MODEL, write_checkpoint
from tests.test_datasets.helpers import encode, make_face

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import occlusion_report as cli  # noqa: E402

N_PAIRS = 12
TYPES = ['none', 'niqab', 'none', 'hand'] * (N_PAIRS // 2)


def _write_bin(root):
    path = osp.join(root, 'occluded.bin')
    imgs = [encode(make_face(i // 4, i, size=112)) for i in range(2 * N_PAIRS)]
    write_verification_bin(path, imgs, [i % 2 == 0 for i in range(N_PAIRS)])
    vis = np.ones((2 * N_PAIRS, 7, 7), np.float16)
    for i, t in enumerate(TYPES):
        if t != 'none':
            vis[i, 4:] = 0
    np.save(osp.join(root, 'occluded.vis.npy'), vis)
    with open(osp.join(root, 'occluded.types.txt'), 'w') as f:
        f.write('\n'.join(TYPES) + '\n')
    return path


class TestOcclusionReport(unittest.TestCase):

    def test_tables(self):
        with tempfile.TemporaryDirectory() as tmp:
            ds = VerificationBinDataset(ann_file=_write_bin(tmp), side_files=True,
                                        pipeline=[dict(type='PackFaceInputs')])
            torch.manual_seed(0)
            model = MODELS.build(TINY_MODEL)
            rec = collect_predictions(model, ds, batch_size=7, per_type=2)
            tables = occlusion_tables(rec)
        self.assertEqual(len(rec['images']), 6)  # 2 per type, for the sheets
        self.assertEqual(rec['images'][0].shape, (112, 112, 3))
        self.assertEqual(rec['pred'].shape, (24, 7, 7))
        # the MAE of the clean images is 1 - mean prediction, by construction
        clean = np.asarray(TYPES) == 'none'
        self.assertAlmostEqual(tables['mae']['none'],
                               float((1 - rec['pred'][clean]).mean()), places=5)
        self.assertEqual(set(tables['mae']), {'all', 'none', 'niqab', 'hand'})
        self.assertEqual(int(tables['hist']['clean'].sum()), 12)
        self.assertEqual(int(tables['hist']['occluded'].sum()), 12)
        # pairs (none, niqab) and (none, hand): 6 each, 12 in all
        q = tables['qaconv']
        self.assertEqual({t: v[0] for t, v in q.items()},
                         {'all': 12, 'niqab': 6, 'hand': 6})
        self.assertTrue(all(0 <= a <= 100 for a in q['all'][1:]))
        self.assertTrue(np.isnan(q['niqab'][1]))  # under 10 pairs
        # The numbers are the test metric's own ablation: same MAE per type,
        # and its per-set QAConv accuracies are the report's 'all' row.
        name = rec['pairs'][0][0] or 'set'
        self.assertEqual(rec['metrics'][f'{name}/visibility/MAE_niqab'],
                         tables['mae']['niqab'])
        for k, key in ((1, 'qaconv'), (2, 'qaconv_no_vis'),
                       (3, 'qaconv_gt_vis')):
            self.assertAlmostEqual(q['all'][k],
                                   rec['metrics'][f'{name}/{key}/accuracy'],
                                   places=9, msg=key)

    def test_built_on_the_metric_not_its_own_inference(self):
        # The report calls neither extract nor match_pairs itself: the metric
        # scores (through the model's test_step), the report reads its records.
        with tempfile.TemporaryDirectory() as tmp:
            ds = VerificationBinDataset(ann_file=_write_bin(tmp), side_files=True,
                                        pipeline=[dict(type='PackFaceInputs')])
            torch.manual_seed(0)
            model = MODELS.build(TINY_MODEL)
            calls = []
            match = model.match_pairs
            model.match_pairs = lambda *a: calls.append(a) or match(*a)
            rec = collect_predictions(model, ds, batch_size=7)
            n = len(calls)
            occlusion_tables(rec)
        self.assertEqual(len(calls), n)  # tables score nothing again
        self.assertEqual(set(rec['scores']),
                         {'qaconv', 'qaconv_gt_vis', 'qaconv_no_vis'})

    def test_max_images_samples_every_group(self):
        # The first N images of a set are clean pairs: --max-images once
        # reported on clean faces only.
        types = ['none'] * 16 + ['none', 'niqab'] * 2 + ['none', 'hand'] * 2
        with tempfile.TemporaryDirectory() as tmp:
            path = osp.join(tmp, 'ordered.bin')
            imgs = [encode(make_face(i // 4, i, size=112)) for i in range(24)]
            write_verification_bin(path, imgs, [i % 2 == 0 for i in range(12)])
            np.save(osp.join(tmp, 'ordered.vis.npy'),
                    np.ones((24, 7, 7), np.float16))
            with open(osp.join(tmp, 'ordered.types.txt'), 'w') as f:
                f.write('\n'.join(types) + '\n')
            ds = VerificationBinDataset(ann_file=path, side_files=True,
                                        pipeline=[dict(type='PackFaceInputs')])
            torch.manual_seed(0)
            model = MODELS.build(TINY_MODEL)
            rec = collect_predictions(model, ds, batch_size=8, max_images=12)
        # two pairs of each group (a genuine and an impostor one)
        self.assertEqual(sorted(rec['types']),
                         ['hand'] * 2 + ['niqab'] * 2 + ['none'] * 8)
        slots = {}
        for _, idx, slot, _ in rec['pairs']:
            slots.setdefault(idx, set()).add(slot)
        self.assertEqual(list(slots.values()), [{0, 1}] * 6)  # whole pairs

    def test_cli_writes_report(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = _write_bin(tmp)
            cfg = osp.join(tmp, 'tiny.py')
            with open(cfg, 'w') as f:
                f.write(f'default_scope = "oaml_mm"\nmodel = {TINY_MODEL!r}\n'
                        'test_dataloader = dict(dataset=dict('
                        f'type="VerificationBinDataset", ann_file={path!r}, '
                        'side_files=True, pipeline=[dict(type="PackFaceInputs")]))\n')
            ckpt = osp.join(tmp, 'tiny.pth')
            write_checkpoint(ckpt, calibration=None)
            out = osp.join(tmp, 'report')
            with contextlib.redirect_stdout(io.StringIO()):
                code = cli.main([cfg, ckpt, '--out', out, '--per-type', '2'])
            self.assertEqual(code, 0)
            text = open(osp.join(out, 'report.md')).read()
            for name in ('sheet_none.png', 'sheet_niqab.png', 'sheet_hand.png',
                         'visibility_hist.png'):
                self.assertTrue(osp.isfile(osp.join(out, name)), name)
                self.assertIn(name, text)
            self.assertIn('| all | 12 |', text)
            import cv2
            self.assertEqual(cv2.imread(osp.join(out, 'sheet_hand.png')).shape,
                             (224, 336, 3))
            # a data set without side files is refused with a clear message
            with open(cfg, 'a') as f:
                f.write('test_dataloader = dict(dataset=dict('
                        f'type="VerificationBinDataset", ann_file={path!r}, '
                        'pipeline=[dict(type="PackFaceInputs")]))\n')
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                self.assertEqual(cli.main([cfg, ckpt, '--out', out]), 2)
            self.assertIn('side_files=True', err.getvalue())
            # --cfg-options overrides the config as tools/train.py's does.
            out2 = osp.join(tmp, 'report2')
            with contextlib.redirect_stdout(io.StringIO()):
                self.assertEqual(cli.main(
                    [cfg, ckpt, '--out', out2, '--cfg-options',
                     'test_dataloader.dataset.side_files=True']), 0)
            self.assertIn('| all | 12 |',
                          open(osp.join(out2, 'report.md')).read())


if __name__ == '__main__':
    unittest.main()
