"""TinyFaceMetric: rank-k against matches + distractors from constructed embeddings."""
import unittest

import numpy as np
import torch
from mmpretrain.structures import DataSample

from oaml_mm.errors import ConfigError, DataFormatError
from oaml_mm.evaluation.metrics import TinyFaceMetric


def _sample(key, emb):
    s = DataSample(metainfo=dict(key=key))
    s.set_field(torch.as_tensor(emb, dtype=torch.float16), 'embedding',
                field_type='data')
    return s


def _directions(n, dim=32, seed=0):
    q, _ = np.linalg.qr(np.random.RandomState(seed).randn(dim, dim))
    return q[:n]  # orthonormal rows


class TestTinyFaceMetric(unittest.TestCase):

    def _samples(self):
        """Probes of subjects 1, 2, 3 whose mates sit at gallery ranks 1, 3 and 7."""
        basis = _directions(32)  # probes, then one private direction per image
        d = basis[:3]
        samples = []
        for subject, direction in zip((1, 2, 3), d):
            samples.append(_sample(f'Probe/{subject}_1.jpg', direction))
        # Gallery matches: cos(probe, mate) = 0.9, 0.6, 0.2.
        for subject, c in zip((1, 2, 3), (0.9, 0.6, 0.2)):
            v = c * d[subject - 1] + np.sqrt(1 - c * c) * basis[2 + subject]
            samples.append(_sample(f'Gallery_Match/{subject}_1.jpg', v))
        # Distractors: 2 close to probe 2 (cos 0.8, 0.7) and 6 close to probe 3
        # (cos 0.3..0.8), orthogonal to the other probes.
        for j, (p, c) in enumerate([(2, 0.8), (2, 0.7)] +
                                   [(3, 0.3 + 0.1 * k) for k in range(6)]):
            v = c * d[p - 1] + np.sqrt(1 - c * c) * basis[6 + j]
            samples.append(_sample(f'Gallery_Distractor/d{j}.jpg', v))
        return samples

    def test_ranks(self):
        m = TinyFaceMetric(ranks=(1, 3, 5, 7))
        samples = self._samples()
        m.process({}, samples[:5])
        m.process({}, samples[5:])
        res = m.evaluate(len(samples))
        self.assertAlmostEqual(res['tinyface/adaface/rank1'], 100 / 3)
        self.assertAlmostEqual(res['tinyface/adaface/rank3'], 200 / 3)
        self.assertAlmostEqual(res['tinyface/adaface/rank5'], 200 / 3)
        self.assertAlmostEqual(res['tinyface/adaface/rank7'], 100.0)
        self.assertEqual(res['tinyface/num_probes'], 3)
        self.assertEqual(res['tinyface/num_gallery'], 11)

    def test_errors(self):
        with self.assertRaises(ConfigError):
            TinyFaceMetric(ranks=(0, 5))
        m = TinyFaceMetric()
        m.process({}, [s for s in self._samples()
                       if s.key.startswith('Probe')])
        with self.assertRaises(DataFormatError):
            m.evaluate(3)


if __name__ == '__main__':
    unittest.main()
