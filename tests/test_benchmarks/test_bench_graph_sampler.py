"""bench_graph_sampler: rows and quadratic extrapolation (no timing asserted)."""
import unittest

from benchmarks import bench_graph_sampler


class TestBenchGraphSampler(unittest.TestCase):

    def test_rows(self):
        rows = {r['name']: r for r in bench_graph_sampler.scoring_rows(
            8, channels=8, repeats=1, k=2)}
        per_pair = rows['graph scoring C=8 per pair']['value'] * 1e-6
        self.assertAlmostEqual(
            rows['graph scoring C=8 N=10000 (extrap.)']['value'],
            per_pair * 1e8, delta=per_pair * 1e8 * 1e-9)
        self.assertAlmostEqual(
            rows['graph scoring C=8 N=100000 (extrap.)']['value'] /
            rows['graph scoring C=8 N=10000 (extrap.)']['value'], 100.0)
        self.assertIsNotNone(rows['graph scoring C=8 N=8']['ratio'])
        draw = bench_graph_sampler.drawing_rows(40, per_class=3,
                                                batch_size=8, k=2)
        self.assertEqual(draw[0]['name'], 'batch drawing N=40')


if __name__ == '__main__':
    unittest.main()
