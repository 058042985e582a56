"""cosine_pairs_dense: whole-row products of distinct templates, then a gather."""
import unittest
import unittest.mock

import torch
import torch.nn.functional as F

from oaml_mm.evaluation.functional.dense_cosine import cosine_pairs_dense


class TestCosinePairsDense(unittest.TestCase):

    def _pairs(self, n_t=300, n=5000, seed=0):
        g = torch.Generator().manual_seed(seed)
        emb = torch.randn(n_t, 24, generator=g) * 3  # not normalised
        # Unsorted, repeated, both sides drawn from overlapping ranges.
        a = torch.randint(0, 120, (n, ), generator=g)
        b = torch.randint(80, n_t, (n, ), generator=g)
        return emb, a, b

    def test_matches_rowwise_cosine_in_every_block_layout(self):
        emb, a, b = self._pairs()
        ref = (F.normalize(emb[a], dim=1) * F.normalize(emb[b], dim=1)).sum(1)
        n_b = b.unique().numel()
        # One block, 7 rows per block, 1 row per block.
        for max_elems in (1 << 26, 7 * n_b, 1):
            out = cosine_pairs_dense(emb, a, b, max_elems=max_elems)
            self.assertEqual(out.dtype, torch.float32)
            torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)

    def test_products_stay_within_budget(self):
        emb, a, b = self._pairs()
        n_b = b.unique().numel()
        seen = []
        real_mm = torch.Tensor.__matmul__

        def spy(x, y):
            out = real_mm(x, y)
            seen.append(out.numel())
            return out

        with unittest.mock.patch.object(torch.Tensor, '__matmul__', spy):
            cosine_pairs_dense(emb, a, b, max_elems=10 * n_b)
        self.assertEqual(len(seen), -(-a.unique().numel() // 10))
        self.assertLessEqual(max(seen), 10 * n_b)

    def test_empty_and_bad_indices(self):
        emb = torch.randn(4, 3)
        self.assertEqual(cosine_pairs_dense(emb, torch.zeros(0, dtype=torch.long),
                                            torch.zeros(0, dtype=torch.long))
                         .shape, (0, ))
        with self.assertRaisesRegex(ValueError, 'outside'):
            cosine_pairs_dense(emb, torch.tensor([0, 4]), torch.tensor([1, 2]))
        with self.assertRaisesRegex(ValueError, 'first and'):
            cosine_pairs_dense(emb, torch.tensor([0]), torch.tensor([1, 2]))


if __name__ == '__main__':
    unittest.main()
