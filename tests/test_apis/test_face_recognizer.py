"""FaceRecognizer: loading, extract, compare and its errors."""
import os
import os.path as osp
import pickle
import tempfile
import unittest

import numpy as np
import torch

from oaml_mm.apis import FaceRecognizer
from oaml_mm.errors import CheckpointError, ImageInputError
from oaml_mm.evaluation.functional import fuse_scores
from oaml_mm.utils import atomic_save
from tests.test_apis.helpers import (TINY_MODEL, face, write_checkpoint,
                                     write_config, write_face)


class _Evil:

    def __reduce__(self):
        return (exec, ('raise SystemExit("payload executed")', ))


class TestFaceRecognizer(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.cfg = write_config(osp.join(cls.tmp.name, 'tiny.py'))
        cls.ckpt = osp.join(cls.tmp.name, 'tiny.pth')
        cls.ref = write_checkpoint(cls.ckpt)
        cls.rec = FaceRecognizer(cls.cfg, cls.ckpt)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_loads_weights_and_calibration(self):
        for k, v in self.ref.model.state_dict().items():
            self.assertTrue(torch.equal(v, self.rec.model.state_dict()[k]), k)
        self.assertEqual(self.rec.thresholds,
                         {'adaface': 0.5, 'qaconv': 1.0, 'fused': 1.5})
        self.assertEqual(self.rec.decision_branch, 'fused')
        self.assertFalse(self.rec.model.training)

    def test_extract_shapes_batching_and_model_agreement(self):
        imgs = [face(i) for i in range(3)]
        out = self.rec.extract(imgs, channel_order='rgb',
                               return_feature_maps=True, batch_size=2)
        self.assertEqual(out['embedding'].shape, (3, 32))
        self.assertEqual(out['norm'].shape, (3, 1))
        self.assertEqual(out['visibility'].shape, (3, 1, 7, 7))
        self.assertEqual(out['feature_map'].shape, (3, 64, 7, 7))
        self.assertEqual(out['feature_map'].dtype, torch.float32)
        torch.testing.assert_close(out['embedding'].norm(dim=1),
                                   torch.ones(3))
        one = self.rec.extract(imgs[2], channel_order='rgb')
        torch.testing.assert_close(one['embedding'][0], out['embedding'][2],
                                   atol=1e-5, rtol=1e-5)
        self.assertNotIn('feature_map', one)
        # Same numbers as the model's own extract on preprocessed input (flip test
        # from the config is on).
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)
        with torch.no_grad():
            ref = self.rec.model.extract(
                self.rec.model.data_preprocessor.normalize(x))
        torch.testing.assert_close(out['embedding'], ref['embedding'],
                                   atol=1e-5, rtol=1e-5)

    def test_extract_runs_the_folded_copy_and_follows_weight_changes(self):
        rec = FaceRecognizer(self.cfg, self.ckpt)
        imgs = [face(i) for i in range(2)]
        out = rec.extract(imgs, channel_order='rgb')
        fast = rec._inference_model()
        self.assertIsNot(fast, rec.model)
        self.assertEqual(sum(isinstance(m, torch.nn.BatchNorm1d)
                             for m in fast.backbone.modules()), 0)  # folded
        self.assertIs(rec._inference_model(), fast)  # cached
        # Changing the weights in place (e.g. load_state_dict) rebuilds it.
        with torch.no_grad():
            rec.model.backbone.input_layer[0].weight.mul_(-1)
        changed = rec.extract(imgs, channel_order='rgb')
        self.assertIsNot(rec._inference_model(), fast)
        self.assertFalse(torch.allclose(changed['embedding'], out['embedding']))
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)
        with torch.no_grad():
            ref = rec.model.extract(rec.model.data_preprocessor.normalize(x))
        torch.testing.assert_close(changed['embedding'], ref['embedding'],
                                   atol=1e-5, rtol=1e-5)

    def test_compare_scores_and_decision(self):
        a, b = face(1), face(2)
        res = self.rec.compare(a, b, channel_order='rgb', return_features=True)
        fa, fb = res['features']
        cos = float((fa['embedding'] * fb['embedding']).sum())
        with torch.no_grad():
            q = float(self.rec.model.match_pairs(
                fa['feature_map'], fb['feature_map'], fa['visibility'],
                fb['visibility'])[0])
        fused = float(fuse_scores([np.array([cos]), np.array([q])], [0.5, 0.5],
                                  [(0.1, 0.2), (-1.0, 2.0)])[0])
        self.assertAlmostEqual(res['scores']['adaface'], cos, places=5)
        self.assertAlmostEqual(res['scores']['qaconv'], q, places=5)
        self.assertAlmostEqual(res['scores']['fused'], fused, places=5)
        self.assertEqual(res['branch'], 'fused')
        self.assertEqual(res['threshold'], 1.5)
        self.assertEqual(res['same'], fused >= 1.5)
        # A user threshold overrides the calibrated one.
        lo = self.rec.compare(a, b, channel_order='rgb', threshold=fused - 1)
        hi = self.rec.compare(a, b, channel_order='rgb', threshold=fused + 1)
        self.assertTrue(lo['same'])
        self.assertFalse(hi['same'])
        same = self.rec.compare(a, a, channel_order='rgb')
        self.assertAlmostEqual(same['scores']['adaface'], 1.0, places=5)

    def test_without_calibration_no_decision(self):
        path = osp.join(self.tmp.name, 'nocal.pth')
        write_checkpoint(path, calibration=None)
        rec = FaceRecognizer(self.cfg, path)
        res = rec.compare(face(1), face(2), channel_order='rgb')
        self.assertNotIn('fused', res['scores'])
        self.assertEqual(res['branch'], 'adaface')
        self.assertIsNone(res['same'])
        rec = FaceRecognizer(self.cfg, path, thresholds={'adaface': -1.0})
        self.assertTrue(rec.compare(face(1), face(2), channel_order='rgb')['same'])

    def test_mismatched_checkpoint_lists_keys(self):
        other = dict(TINY_MODEL, head=dict(type='AdaFaceHead', in_channels=32,
                                           num_classes=7),
                     neck=None)
        cfg = write_config(osp.join(self.tmp.name, 'other.py'), other)
        with self.assertRaises(CheckpointError) as ctx:
            FaceRecognizer(cfg, self.ckpt)
        msg = str(ctx.exception)
        self.assertIn('unexpected keys: neck.', msg)
        self.assertIn('head.kernel: checkpoint (32, 5) vs config (32, 7)', msg)
        bad = osp.join(self.tmp.name, 'nostate.pth')
        atomic_save({'state_dict': {'x': 'not a tensor'}}, bad)
        with self.assertRaisesRegex(CheckpointError, 'no state_dict'):
            FaceRecognizer(self.cfg, bad)
        with self.assertRaisesRegex(CheckpointError, 'no such checkpoint'):
            FaceRecognizer(self.cfg, osp.join(self.tmp.name, 'missing.pth'))

    def test_malicious_checkpoint_refused(self):
        evil = osp.join(self.tmp.name, 'evil.pth')
        with open(evil, 'wb') as f:
            pickle.dump({'state_dict': _Evil()}, f)
        with self.assertRaises(CheckpointError):
            FaceRecognizer(self.cfg, evil)

    def test_from_work_dir_and_paths(self):
        work = osp.join(self.tmp.name, 'work')
        os.makedirs(work)
        write_config(osp.join(work, 'tiny.py'))
        ckpt = osp.join(work, 'iter_10.pth')
        write_checkpoint(ckpt, seed=3)
        with open(osp.join(work, 'last_checkpoint'), 'w') as f:
            f.write(ckpt)
        rec = FaceRecognizer.from_work_dir(work)
        self.assertEqual(rec.checkpoint_path, ckpt)
        p = write_face(self.tmp.name, 'x.png', 4)
        res = rec.compare(p, p)
        self.assertAlmostEqual(res['scores']['adaface'], 1.0, places=5)
        with self.assertRaisesRegex(CheckpointError, 'no last_checkpoint'):
            FaceRecognizer.from_work_dir(self.tmp.name)

    def test_baseline_without_qaconv(self):
        base = dict(TINY_MODEL, neck=None, qaconv_head=None)
        rec = FaceRecognizer(base, thresholds={'adaface': 0.99})
        res = rec.compare(face(1), face(1), channel_order='rgb')
        self.assertEqual(set(res['scores']), {'adaface'})
        self.assertEqual(res['branch'], 'adaface')
        self.assertTrue(res['same'])
        vis = rec.extract(face(1), channel_order='rgb')['visibility']
        self.assertTrue(torch.equal(vis, torch.ones(1, 1, 7, 7)))

    def test_bad_inputs(self):
        with self.assertRaisesRegex(ImageInputError, 'not an aligned 112x112'):
            self.rec.extract(np.zeros((100, 100, 3), np.uint8),
                             channel_order='rgb')
        with self.assertRaisesRegex(ImageInputError, 'no such image'):
            self.rec.compare('/nonexistent/a.jpg', face(0), channel_order='rgb')


if __name__ == '__main__':
    unittest.main()
