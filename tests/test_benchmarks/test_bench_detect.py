"""A tiny run of benchmarks/bench_detect.py, so that it cannot silently rot."""
import unittest

from benchmarks import bench_detect, run_all


class TestBenchDetect(unittest.TestCase):

    def test_rows(self):
        self.assertIn('detect', run_all.SUITE)
        rows = bench_detect.run(quick=True, repeats=1)
        self.assertEqual([r['name'] for r in rows],
                         ['photos/detect+align 640x480',
                          'photos/detect+align 112x112 loose crop'])
        for r in rows:
            self.assertEqual(r['unit'], 'images/s')
            self.assertGreater(r['value'], 0)
            self.assertAlmostEqual(r['ratio'], r['value'] / r['baseline_value'])

    def test_inputs(self):
        imgs = bench_detect.photos()
        self.assertEqual(imgs['640x480'].shape, (480, 640, 3))
        self.assertEqual(imgs['112x112 loose crop'].shape, (112, 112, 3))


if __name__ == '__main__':
    unittest.main()
