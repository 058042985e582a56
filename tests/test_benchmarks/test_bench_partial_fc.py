"""bench_partial_fc: a tiny 2-process run, the rows and the skip rule (no timing
asserted)."""
import unittest

from benchmarks import bench_partial_fc


class TestBenchPartialFC(unittest.TestCase):

    def test_tiny_run_rows(self):
        rows = {r['name']: r for r in bench_partial_fc.run(
            sizes=(200, ), repeats=1, batch=4, dim=8, log=lambda *_: None)}
        for label in ('replicated', 'pfc@1', 'pfc@0.1'):
            self.assertGreater(rows[f'partial_fc/0k {label} step']['value'], 0)
            self.assertGreater(
                rows[f'partial_fc/0k {label} peak memory/rank']['value'], 0)
        row = rows['partial_fc/0k pfc@0.1 step']
        self.assertAlmostEqual(row['ratio'],
                               row['baseline_value'] / row['value'])

    def test_skip_and_extrapolation(self):
        big = bench_partial_fc.estimate_bytes('replicated', 10**6, 1.0, 64,
                                              512)
        self.assertGreater(2 * big, 13 * bench_partial_fc.GIB)
        results = {
            ('replicated', 100, 1.0): dict(seconds=1.0, peak_mib=10.0),
            ('replicated', 300, 1.0): dict(seconds=3.0, peak_mib=30.0),
            ('replicated', 1000, 1.0): dict(skipped='too big'),
            ('pfc', 1000, 0.1): dict(seconds=0.5, peak_mib=4.0),
            ('pfc', 1000, 1.0): dict(skipped='too big'),
        }
        rows = {r['name']: r for r in bench_partial_fc.rows_from(
            results, (1000, ), batch=4, dim=8)}
        row = rows['partial_fc/1k pfc@0.1 step']
        self.assertAlmostEqual(row['baseline_value'], 10.0 * 1e3)  # linear
        self.assertIn('extrapolated', row['note'])
        self.assertIn('not run', rows['partial_fc/1k replicated step']['note'])


if __name__ == '__main__':
    unittest.main()
