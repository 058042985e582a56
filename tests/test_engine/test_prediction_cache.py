"""PredictionCache: the face loops run the model once per distinct image."""
import copy
import unittest

import torch
from mmpretrain.structures import DataSample

from oaml_mm.engine.runner import PredictionCache
from oaml_mm.registry import MODELS
from tests.toy_components import tiny_oaml

TINY = tiny_oaml(test_cfg=dict(return_feature_maps=True))


def images(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, 112, 112), dtype=torch.uint8, generator=g)
            for _ in range(n)]


def pair_batch(imgs, order, start=0):
    """A .bin-like batch: slot k shows image order[k], with its own metainfo and
    its own true visibility."""
    samples = []
    for k, i in enumerate(order):
        s = DataSample(metainfo=dict(pair_index=(start + k) // 2,
                                     pair_slot=(start + k) % 2))
        s.set_field(torch.full((1, 7, 7), float(k)), 'gt_visibility')
        samples.append(s)
    return dict(inputs=[imgs[i].clone() for i in order], data_samples=samples)


class TestPredictionCache(unittest.TestCase):

    def setUp(self):
        torch.manual_seed(0)
        self.model = MODELS.build(copy.deepcopy(TINY)).eval()
        self.imgs = images(4, 0)
        self.calls = []

    def forward(self, batch):
        self.calls.append(len(batch['inputs']))
        with torch.no_grad():
            return self.model.test_step(batch)

    def test_one_forward_per_distinct_image(self):
        cache = PredictionCache()
        first = [0, 1, 0, 2, 1, 1]
        second = [2, 3, 0, 3]
        out1 = cache.step(pair_batch(self.imgs, first), self.forward)
        out2 = cache.step(pair_batch(self.imgs, second, start=6), self.forward)
        # Images 0, 1, 2 in the first batch; only 3 is new in the second.
        self.assertEqual(self.calls, [3, 1])
        self.assertEqual(len(cache), 4)
        with torch.no_grad():
            ref = self.model.test_step(pair_batch(self.imgs, first + second))
        for k, got in enumerate(out1 + out2):
            want = ref[k]
            # Each slot keeps its own metainfo and true visibility.
            self.assertEqual(got.pair_index, k // 2)
            self.assertEqual(got.pair_slot, k % 2)
            self.assertTrue(torch.equal(got.gt_visibility,
                                        torch.full((1, 7, 7), float(k % 6)
                                                   if k < 6 else float(k - 6))))
            for name in ('embedding', 'norm', 'visibility', 'feature_map'):
                torch.testing.assert_close(got.get(name), want.get(name),
                                           rtol=1e-4, atol=1e-5,
                                           msg=f'slot {k} {name}')

    def test_all_cached_batch_runs_nothing_and_clear_forgets(self):
        cache = PredictionCache()
        cache.step(pair_batch(self.imgs, [0, 1]), self.forward)
        out = cache.step(pair_batch(self.imgs, [1, 0, 1]), self.forward)
        self.assertEqual(self.calls, [2])
        self.assertEqual(len(out), 3)
        self.assertIn('embedding', out[0])
        cache.clear()
        cache.step(pair_batch(self.imgs, [1]), self.forward)
        self.assertEqual(self.calls, [2, 1])

    def test_repeated_slots_get_copies(self):
        cache = PredictionCache()
        out = cache.step(pair_batch(self.imgs, [0, 0]), self.forward)
        self.assertIsNot(out[0].embedding, out[1].embedding)
        want = out[0].embedding.clone()
        out[1].embedding.mul_(0)  # a metric normalising in place
        self.assertTrue(torch.equal(out[0].embedding, want))

    def test_augmented_views_pass_through(self):
        # mmengine test-time augmentation: a list of views per sample.
        cache = PredictionCache()
        batch = pair_batch(self.imgs, [0, 1])
        batch['inputs'] = [[x, x.flip(-1)] for x in batch['inputs']]
        calls = []
        cache.step(batch, lambda b: calls.append(b) or b['data_samples'])
        self.assertEqual(len(calls), 1)
        self.assertIs(calls[0], batch)
        self.assertEqual(len(cache), 0)

    def test_key_is_content(self):
        a = self.imgs[0]
        b = a.clone()
        self.assertEqual(PredictionCache.key(a), PredictionCache.key(b))
        b[0, 0, 0] ^= 1
        self.assertNotEqual(PredictionCache.key(a), PredictionCache.key(b))
        # Same bytes, other shape: another image.
        self.assertNotEqual(PredictionCache.key(a),
                            PredictionCache.key(a.reshape(3, 56, 224)))

    def test_stacked_batch_passes_through(self):
        cache = PredictionCache()
        batch = pair_batch(self.imgs, [0, 0])
        batch['inputs'] = torch.stack(batch['inputs'])
        cache.step(batch, self.forward)
        self.assertEqual(self.calls, [2])
        self.assertEqual(len(cache), 0)


if __name__ == '__main__':
    unittest.main()
