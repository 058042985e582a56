"""FaceRecognizer(backend='onnxruntime'): the same features as the PyTorch path."""
import copy
import unittest

import numpy as np
import torch

from oaml_mm.apis import FaceRecognizer
from oaml_mm.errors import ConfigError
from tests.test_apis.helpers import TINY_MODEL


class TestOnnxRuntimeBackend(unittest.TestCase):

    def _pair(self, flip):
        model = copy.deepcopy(TINY_MODEL)
        model['test_cfg'] = dict(flip_test=flip)
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
