"""projects.occlusion_study.split_schedule_choice: the split-schedule rule."""
import unittest

from projects.occlusion_study import split_schedule_choice as ssc


def _run(schedule, fused, adaface=None, sets=ssc.ALL_SETS):
    metrics = {}
    for s in sets:
        metrics[f'{s}/fused/accuracy'] = fused
        metrics[f'{s}/adaface/accuracy'] = fused if adaface is None else adaface
    return dict(adaface_schedule=schedule, metrics=metrics)


class TestSplitScheduleChoice(unittest.TestCase):

    def test_best_short_score_among_the_fed(self):
        short = [_run('0.1', 82.0), _run('0.1', 80.0),   # mean 81.0: best
                 _run('0.1:0.5', 80.0), _run('0.1:0.5', 80.5)]
        long = [_run('0.1', 83.0, 80.0), _run('0.1:0.5', 85.5, 84.0)]
        chosen, rows = ssc.choose(short, long, _run(None, 85.0))
        # 0.1 starves (2 points below the baseline at the longer budget).
        self.assertEqual(chosen, '0.1:0.5')
        by = {r['schedule']: r for r in rows}
        self.assertTrue(by['0.1']['starves'])
        self.assertAlmostEqual(by['0.1']['shortfall'], 2.0)
        self.assertAlmostEqual(by['0.1']['short'], 81.0)
        self.assertAlmostEqual(by['0.1:0.5']['long_adaface'], 84.0)
        # Within the tolerance nothing starves: the short budget decides.
        self.assertEqual(ssc.choose(short, long, _run(None, 85.0),
                                    tolerance=2.5)[0], '0.1')

    def test_all_starve_smallest_shortfall(self):
        short = [_run('0.1', 82.0), _run('0.1:0.7', 79.0)]
        long = [_run('0.1', 80.0), _run('0.1:0.7', 83.0)]
        chosen, rows = ssc.choose(short, long, _run(None, 85.0))
        self.assertEqual(chosen, '0.1:0.7')
        self.assertTrue(all(r['starves'] for r in rows))
        text = ssc.table(rows, chosen, 85.0)
        self.assertIn('| 0.1 : 0.9 -> 0.7 : 0.3 | 79.0 | 79.0 | 83.0 |', text)

    def test_missing_runs_and_sets_are_named(self):
        with self.assertRaisesRegex(ValueError, 'differ'):
            ssc.choose([_run('0.1', 80.0)], [_run('0.1:0.5', 80.0)],
                       _run(None, 85.0))
        with self.assertRaisesRegex(KeyError, 'heldout_clean/adaface'):
            ssc.choose([_run('0.1', 80.0)], [_run('0.1', 80.0)],
                       _run(None, 85.0, sets=ssc.VAL_SETS))
