"""FaceRecognizer(backend='onnxruntime'): the same features as the PyTorch path."""
import copy
import os.path as osp
import tempfile
import unittest

import numpy as np
import torch

from oaml_mm.apis import FaceRecognizer
from oaml_mm.errors import ConfigError
from tests.test_apis.helpers import TINY_MODEL


class TestOnnxMaxDifference(unittest.TestCase):
    """onnx_max_difference: tools/deployment/export_onnx.py's agreement check."""

    def test_small_for_the_exported_model_large_for_another(self):
        from oaml_mm.apis.onnx_backend import export_onnx, onnx_max_difference
        torch.manual_seed(0)
        model = FaceRecognizer(copy.deepcopy(TINY_MODEL)).model.eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = osp.join(tmp, 'm.onnx')
            export_onnx(model, path, 112)
            self.assertLess(onnx_max_difference(model, path, 112), 1e-3)
            # The same file against changed weights: the check sees it.
            with torch.no_grad():
                for p in model.backbone.parameters():
                    p.add_(0.5)
            self.assertGreater(onnx_max_difference(model, path, 112, (2, )),
                               1e-2)


class TestOnnxRuntimeBackend(unittest.TestCase):

    def _pair(self, flip, neck=None, **test_cfg):
        model = copy.deepcopy(TINY_MODEL)
        model['test_cfg'] = dict(flip_test=flip, **test_cfg)
        if neck is not None:
            model['neck'] = neck
        torch.manual_seed(0)
        ref = FaceRecognizer(model)
        ort = FaceRecognizer(model, backend='onnxruntime')
        ort.model.load_state_dict(ref.model.state_dict())
        return ref, ort

    def test_same_features_with_and_without_flip(self):
        crops = torch.from_numpy(np.random.default_rng(0).integers(
            0, 256, (5, 3, 112, 112), dtype=np.uint8))
        for flip in (False, True):
            ref, ort = self._pair(flip)
            a = ref.extract(crops, return_feature_maps=True)
            b = ort.extract(crops, return_feature_maps=True, batch_size=2)
            self.assertEqual(set(a), set(b))
            for k in a:
                self.assertEqual(a[k].shape, b[k].shape, k)
                torch.testing.assert_close(b[k], a[k], atol=2e-4, rtol=1e-3,
                                           msg=f'{k} flip={flip}')
            # Scores through the same API agree too.
            sa = ref.compare(crops[0], crops[1])['scores']
            sb = ort.compare(crops[0], crops[1])['scores']
            for k in sa:
                self.assertAlmostEqual(sa[k], sb[k], places=3, msg=k)

    def test_visibility_weighted_embedding_exports(self):
        # test_cfg.global_vis: the occlusion head is in the graph, so the
        # weighting is too; the flip test weights each view by its own map.
        crops = torch.from_numpy(np.random.default_rng(2).integers(
            0, 256, (3, 3, 112, 112), dtype=np.uint8))
        plain = self._pair(False)[0].extract(crops)['embedding']
        for flip in (False, True):
            ref, ort = self._pair(flip, global_vis=True,
                                  global_vis_range=(0.3, 0.7))
            a, b = ref.extract(crops), ort.extract(crops)
            torch.testing.assert_close(b['embedding'], a['embedding'],
                                       atol=2e-4, rtol=1e-3)
            torch.testing.assert_close(b['norm'], a['norm'], atol=2e-4,
                                       rtol=1e-3)
            if not flip:
                self.assertGreater(
                    float((a['embedding'] - plain).abs().max()), 1e-3)

    def test_multiscale_occlusion_head_exports(self):
        # The stage-reading neck and its pooling to the grid are in the graph.
        crops = torch.from_numpy(np.random.default_rng(3).integers(
            0, 256, (3, 3, 112, 112), dtype=np.uint8))
        ref, ort = self._pair(False, neck=dict(
            type='MultiScaleOcclusionHead', in_channels=(16, 32, 64),
            channels=4, out_size=28))
        a, b = ref.extract(crops), ort.extract(crops)
        for k in ('embedding', 'visibility'):
            torch.testing.assert_close(b[k], a[k], atol=2e-4, rtol=1e-3, msg=k)

    def test_segmenter_neck_exports_and_loads_from_a_checkpoint(self):
        # An image-reading neck (OcclusionSegmenter) is in the graph too, and
        # FaceRecognizer restores it from the recognizer's checkpoint.
        import os.path as osp
        import tempfile

        from tests.test_apis.helpers import write_checkpoint, write_config
        model = copy.deepcopy(TINY_MODEL)
        model['neck'] = dict(type='OcclusionSegmenter', channels=(4, 8, 8, 8),
                             frozen=True)
        crops = torch.from_numpy(np.random.default_rng(3).integers(
            0, 256, (3, 3, 112, 112), dtype=np.uint8))
        with tempfile.TemporaryDirectory() as tmp:
            cfg = write_config(osp.join(tmp, 'seg.py'), model)
            ckpt = osp.join(tmp, 'seg.pth')
            saved = write_checkpoint(ckpt, seed=4, model=model)
            ref = FaceRecognizer(cfg, ckpt)
            ort = FaceRecognizer(cfg, ckpt, backend='onnxruntime')
        a, b = ref.extract(crops), ort.extract(crops)
        self.assertEqual(tuple(a['visibility'].shape), (3, 1, 7, 7))
        torch.testing.assert_close(
            a['visibility'], saved.extract(crops)['visibility'])
        torch.testing.assert_close(b['visibility'], a['visibility'],
                                   atol=2e-4, rtol=1e-3)
        self.assertEqual(ref.absent_parts, [])

    def test_flip_changes_the_embedding(self):
        # The flip branch is really applied (not a no-op on this input).
        crops = torch.from_numpy(np.random.default_rng(1).integers(
            0, 256, (2, 3, 112, 112), dtype=np.uint8))
        plain = self._pair(False)[1].extract(crops)['embedding']
        flip = self._pair(True)[1].extract(crops)['embedding']
        self.assertGreater(float((plain - flip).abs().max()), 1e-3)

    def test_bad_backend(self):
        with self.assertRaises(ConfigError):
            FaceRecognizer(TINY_MODEL, backend='tensorrt')


if __name__ == '__main__':
    unittest.main()
