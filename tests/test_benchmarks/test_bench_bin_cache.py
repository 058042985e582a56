"""bench_bin_cache: rows and their baselines (no timing asserted)."""
import unittest

from benchmarks import bench_bin_cache


class TestBenchBinCache(unittest.TestCase):

    def test_rows(self):
        rows = bench_bin_cache.run(quick=True, repeats=1, forward=False)
        self.assertEqual([r['name'] for r in rows],
                         ['data pass, 300 images, cached',
                          'cache build (first load)'])
        for r in rows:
            self.assertGreater(r['value'], 0)
            self.assertGreater(r['ratio'], 0)


if __name__ == '__main__':
    unittest.main()
