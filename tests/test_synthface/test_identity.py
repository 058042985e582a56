import unittest

import numpy as np

from oaml_mm.errors import ConfigError
from oaml_mm.synthface.identity import (CATEGORICAL_SIZES, CONTINUOUS_RANGES,
                                        identity_distance, identity_vector,
                                        nearest_distances, sample_identities,
                                        sample_identity, stream_rng)


class TestIdentity(unittest.TestCase):

    def test_parameters_in_range(self):
        ident = sample_identity(stream_rng(3, 0, 1, 0), 1)
        for name, (lo, hi) in CONTINUOUS_RANGES.items():
            self.assertTrue(lo <= ident.params[name] <= hi, name)
        for name, size in CATEGORICAL_SIZES.items():
            self.assertIn(ident.categories[name], range(size))
        self.assertEqual(ident.eye_y, ident.params['eye_y'])  # attribute access

    def test_vector_and_distance(self):
        a = sample_identity(stream_rng(0, 0, 0, 0), 0)
        self.assertEqual(identity_distance(a, a), 0.0)
        vec = identity_vector(a)
        self.assertEqual(
            len(vec), len(CONTINUOUS_RANGES) + sum(CATEGORICAL_SIZES.values()))
        # a categorical change alone adds exactly 1 to the squared distance
        cats = dict(a.categories)
        cats['marks'] = (cats['marks'] + 1) % CATEGORICAL_SIZES['marks']
        b = type(a)(a.index, dict(a.params), cats, a.texture_seed)
        self.assertAlmostEqual(identity_distance(a, b), 1.0)

    def test_deterministic_and_prefix_stable(self):
        a = sample_identities(5, seed=7)
        b = sample_identities(8, seed=7)
        for x, y in zip(a, b):
            self.assertEqual(x.to_dict(), y.to_dict())
        c = sample_identities(5, seed=8)
        self.assertNotEqual(a[0].params, c[0].params)

    def test_near_duplicates_rejected(self):
        # unconstrained draws of 60 identities have nearest distances around 1.3-2;
        # a strict threshold must push every pair above it
        free = [sample_identity(stream_rng(0, 0, i, 0), i) for i in range(60)]
        threshold = float(np.percentile(nearest_distances(free), 40))
        ids = sample_identities(60, seed=0, min_distance=threshold)
        self.assertGreaterEqual(nearest_distances(ids).min(), threshold)
        self.assertLess(nearest_distances(free).min(), threshold)
        with self.assertRaises(ConfigError):
            sample_identities(10, seed=0, min_distance=50.0, max_attempts=3)
