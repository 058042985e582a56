"""Tiny runs of every benchmark script, so that the suite cannot silently rot."""
import contextlib
import importlib
import io
import os.path as osp
import tempfile
import unittest
from unittest import mock

import torch

from benchmarks import (bench_inference, bench_malloc, bench_qaconv,
                        bench_train_step, run_all)
from benchmarks.common import make_row, time_interleaved

ROW_KEYS = {'name', 'value', 'unit', 'baseline_name', 'baseline_value', 'ratio'}


class TestBenchmarks(unittest.TestCase):

    def check_rows(self, rows):
        self.assertTrue(rows)
        for r in rows:
            self.assertLessEqual(ROW_KEYS, set(r), r['name'])
            self.assertTrue(r['value'] > 0, r['name'])
            if r['baseline_value']:
                # ratio > 1 means better than the baseline, whatever the unit
                self.assertTrue(any(
                    abs(r['ratio'] - q) < 1e-9 * q
                    for q in (r['value'] / r['baseline_value'],
                              r['baseline_value'] / r['value'])), r['name'])

    def test_every_script_has_help_and_run(self):
        for name, (module, _) in run_all.SUITE.items():
            mod = importlib.import_module(module)
            self.assertTrue(callable(mod.run), name)
            out = io.StringIO()
            with self.assertRaises(SystemExit) as ctx, \
                    contextlib.redirect_stdout(out):
                mod.main(['--help'])
            self.assertEqual(ctx.exception.code, 0)
            self.assertIn('--quick', out.getvalue())

    def test_qaconv_reference_agrees_and_rows(self):
        head = bench_qaconv.build_head('cpu')
        p, g = bench_qaconv._maps(5, 'cpu', 0), bench_qaconv._maps(3, 'cpu', 1)
        vp, vg = torch.rand(5, 1, 7, 7), torch.rand(3, 1, 7, 7)
        with torch.no_grad():
            torch.testing.assert_close(
                bench_qaconv.reference_match(head, p, g, vp, vg, chunk=2),
                head.match(p, g, vp, vg), atol=1e-4, rtol=1e-4)
        rows = bench_qaconv.run(num=4, repeats=1, memory_check=False)
        self.check_rows(rows)
        self.assertEqual(len(rows), 8)  # {fp32, bf16} x {vis, novis} x 2
        self.assertTrue(all('aim' in r for r in rows))

    def test_train_step_tiny(self):
        rows = bench_train_step.run(iters=2, repeats=1, width=0.125)
        self.check_rows(rows)
        self.assertEqual(rows[0]['unit'], 'ms/iter')
        self.assertIn('overhead', rows[0]['note'])

    def test_inference_tiny(self):
        rows = bench_inference.run(depth=18, width=0.125, repeats=1,
                                   batch_sizes=(1, 2))
        self.check_rows(rows)
        self.assertIn('max |onnx - torch|', rows[0]['note'])
        names = [r['name'] for r in rows]
        self.assertEqual(names, [
            'inference/extract bs=1', 'inference/extract bs=2',
            'inference/batching_gain', 'inference/extract_folded_cl bs=1',
            'inference/extract_folded_cl bs=2',
            'inference/batching_gain_folded_cl'])
        diff = float(rows[3]['note'].rsplit('max |fast - eager| ', 1)[1])
        self.assertLess(diff, 1e-3)

    def test_malloc_child_and_rows(self):
        res = bench_malloc.child(['train'], 1)['train']
        self.assertEqual(res['units'], 1)
        # A count of the child's own faults: 0 is possible once the allocator
        # keeps its memory (tuned thresholds, warm heap), so only its type.
        self.assertIsInstance(res['minflt'], int)
        self.assertGreaterEqual(res['minflt'], 0)
        self.assertEqual(len(res['digest']), 64)

        def spawn(workloads, iters, tuned, digest='d'):
            # The tuned side: half the CPU time, a tenth of the faults.
            k = 1 if tuned else 2
            return {w: dict(seconds=3.0 * k, units=2, minflt=100 * k ** 4,
                            stime=0.5 * k, utime=k, maxrss_mib=1000.0 + tuned,
                            digest=digest) for w in workloads}

        with mock.patch.object(bench_malloc, '_spawn', spawn):
            rows = bench_malloc.run(repeats=1, iters=2)
        self.check_rows(rows)
        by_name = {r['name']: r for r in rows}
        cpu = by_name['malloc/train CPU ms/iter (tuned thresholds)']
        self.assertAlmostEqual(cpu['value'], 750.0)
        self.assertAlmostEqual(cpu['ratio'], 2.0)
        faults = by_name['malloc/eval minor page faults (tuned thresholds)']
        self.assertAlmostEqual(faults['ratio'], 16.0)
        self.assertAlmostEqual(
            by_name['malloc/peak RSS (tuned thresholds)']['ratio'], 1000 / 1001)

        def differing(workloads, iters, tuned):
            return spawn(workloads, iters, tuned, digest=str(tuned))

        with mock.patch.object(bench_malloc, '_spawn', differing), \
                self.assertRaisesRegex(RuntimeError, 'results differ'):
            bench_malloc.run(repeats=1, iters=2)

    def test_report_and_feed_rows(self):
        results = {
            'data': [make_row('rec_decode_augment', 500.0, 'images/s/core',
                              'cv2', 1000.0)],
            'train_step': [make_row('train_step/model_consumption', 100.0,
                                    'main-batch images/s')],
        }
        feed = run_all.data_feed_rows(results)
        self.assertEqual(feed[0]['baseline_value'], 200.0)
        self.assertTrue(feed[0]['met'])
        results['data_feed'] = feed
        with tempfile.TemporaryDirectory() as tmp:
            path = osp.join(tmp, 'R.md')
            run_all.write_report(path, run_all.machine_info('cpu'), results,
                                 {'x': 'Traceback: boom'}, {'total': 1.0}, True)
            text = open(path).read()
        self.assertIn('GPU figures were not measured here', text)
        for name in run_all.GPU_ROWS:  # gpu_check.sh's rows, marked
            self.assertIn(f'| {name} | | not yet measured |', text)
        self.assertIn('| data_feed | data/workers_to_feed_demo_model', text)
        self.assertIn('boom', text)
        self.assertEqual(run_all.data_feed_rows({}), [])

    def test_time_interleaved_and_ratio(self):
        t = time_interleaved({'a': lambda: None}, repeats=2)
        self.assertGreaterEqual(t['a'], 0)
        self.assertEqual(make_row('x', 2.0, 's', 'b', 4.0,
                                  higher_is_better=False)['ratio'], 2.0)


if __name__ == '__main__':
    unittest.main()
