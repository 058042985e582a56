"""projects.occlusion_study.split_schedule_choice: the split-schedule rule."""
import json
import os.path as osp
import tempfile
import unittest

from oaml_mm.errors import ConfigError, DataFormatError, MissingFileError
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
        with self.assertRaisesRegex(DataFormatError, 'heldout_clean/adaface'):
            ssc.choose([_run('0.1', 80.0)], [_run('0.1', 80.0)],
                       _run(None, 85.0, sets=ssc.VAL_SETS))
        # A longer-budget run lacking a set: the error names its file.
        long = dict(_run('0.1', 80.0, sets=ssc.VAL_SETS), source='l.json')
        with self.assertRaisesRegex(DataFormatError,
                                    r'l.json: .*heldout_clean/fused'):
            ssc.choose([_run('0.1', 80.0)], [long], _run(None, 85.0))
        # No runs at all (empty "runs" lists): one ConfigError, not min([]).
        with self.assertRaisesRegex(ConfigError, 'demo-budget files hold no'):
            ssc.choose([], [], _run(None, 85.0))
        with self.assertRaisesRegex(ConfigError, 'longer-budget files hold no'):
            ssc.choose([_run('0.1', 80.0)], [], _run(None, 85.0))
        with self.assertRaisesRegex(ConfigError, 'differ'):
            ssc.choose([_run('0.1', 80.0)], [_run('0.2', 80.0)],
                       _run(None, 85.0))


def _at(run, iters, model='oaml_seg', source='x.json'):
    return dict(run, iters=iters, model=model, source=source)


class TestSplitScheduleChoiceInputs(unittest.TestCase):
    """Sweep JSONs that do not fit the rule are refused, naming the file."""

    def setUp(self):
        self.short = [_at(_run('0.1', 80.0), 500), _at(_run('0.1:0.5', 81.0), 500)]
        self.long = [_at(_run('0.1', 83.0), 1500), _at(_run('0.1:0.5', 84.0), 1500)]
        self.base = _at(_run(None, 85.0), 1500, model='adaface', source='b.json')

    def test_runs_without_a_schedule(self):
        # An older sweep's run has no adaface_schedule key at all.
        old = dict(_at(_run('0.1', 80.0), 500, model='oaml', source='old.json'))
        del old['adaface_schedule']
        with self.assertRaisesRegex(ConfigError, 'old.json.*without adaface_'):
            ssc.choose([old], self.long[:1], self.base)
        # The AdaFace run among the demo-budget files.
        with self.assertRaisesRegex(ConfigError, 'b.json.*--long-baseline'):
            ssc.choose(self.short + [dict(self.base, iters=500)], self.long,
                       self.base)

    def test_one_run_per_schedule_at_the_longer_budget(self):
        dup = _at(_run('0.1', 70.0), 1500, source='dup.json')
        with self.assertRaisesRegex(ConfigError, "'0.1' has two runs.*dup.json"):
            ssc.choose(self.short, self.long + [dup], self.base)

    def test_budgets(self):
        with self.assertRaisesRegex(ConfigError, 'swapped'):
            ssc.choose([dict(r, iters=1500) for r in self.short],
                       [dict(r, iters=500) for r in self.long],
                       dict(self.base, iters=500))
        with self.assertRaisesRegex(ConfigError, r'mix training budgets \[500, 1500\]'):
            ssc.choose(self.short, self.long + [_at(_run('0.2', 1.0), 500)],
                       self.base)
        with self.assertRaisesRegex(ConfigError, 'b.json.*trained 500'):
            ssc.choose(self.short, self.long, dict(self.base, iters=500))

    def test_baseline_of_the_adaface_family(self):
        with self.assertRaisesRegex(ConfigError, "'oaml_seg', not a model of"):
            ssc.choose(self.short, self.long, self.long[0])

    def test_one_run_per_schedule_and_seed_at_the_demo_budget(self):
        # Two files of one seed (or one file given twice) would count that
        # seed twice in the mean.
        short = [dict(r, seed=0) for r in self.short]
        again = [dict(r, source='y.json') for r in short]
        with self.assertRaisesRegex(ConfigError, "'0.1' has two demo-budget "
                                    'runs at seed 0.*x.json.*y.json'):
            ssc.choose(short + again, self.long, self.base)
        other = [dict(r, seed=1, source='y.json') for r in self.short]
        self.assertEqual(ssc.choose(short + other, self.long, self.base)[0],
                         '0.1:0.5')

    def test_file_given_twice_in_main(self):
        with tempfile.TemporaryDirectory() as tmp:
            def dump(name, iters, runs, seed=0):
                path = osp.join(tmp, name)
                with open(path, 'w') as f:
                    json.dump({'iters': iters, 'seed': seed, 'runs': runs}, f)
                return path
            short = dump('s.json', 500, [dict(_run('0.1', 80.0), model='oaml')])
            long = dump('l.json', 1500, [dict(_run('0.1', 84.0), model='oaml')])
            base = dump('b.json', 1500, [dict(_run(None, 85.0),
                                              model='adaface')])
            args = ['--long', long, '--long-baseline', base]
            with self.assertRaisesRegex(SystemExit, 'two demo-budget runs at '
                                        'seed 0.*s.json.*s.json'):
                ssc.main(['--short', short, short] + args)
            # Without a seed in the file, the same file is still recognised.
            with open(short) as f:
                data = json.load(f)
            del data['seed']
            with open(short, 'w') as f:
                json.dump(data, f)
            with self.assertRaisesRegex(SystemExit, 'two demo-budget runs'):
                ssc.main(['--short', short, short] + args)
            # A set missing from a run: one line naming the file.
            lack = dump('lack.json', 1500, [dict(
                _run('0.1', 84.0, sets=ssc.VAL_SETS), model='oaml')])
            with self.assertRaisesRegex(SystemExit, 'DataFormatError: .*'
                                        'lack.json.*heldout_clean/fused'):
                ssc.main(['--short', short, '--long', lack,
                          '--long-baseline', base])
            empty = dump('e.json', 500, [])
            with self.assertRaisesRegex(SystemExit, 'ConfigError: the '
                                        'demo-budget files hold no runs'):
                ssc.main(['--short', empty] + args)

    def test_read_runs(self):
        with tempfile.TemporaryDirectory() as tmp:
            bad = osp.join(tmp, 'bad.json')
            with open(bad, 'w') as f:
                f.write('{"runs": [')
            with self.assertRaisesRegex(DataFormatError, 'bad.json: not a JSON'):
                ssc.read_runs([bad])
            with open(bad, 'w') as f:
                json.dump({'runs': [{'model': 'oaml'}]}, f)
            with self.assertRaisesRegex(DataFormatError, 'record 0.*metrics'):
                ssc.read_runs([bad])
            with self.assertRaises(MissingFileError):
                ssc.read_runs([osp.join(tmp, 'none.json')])
            good = osp.join(tmp, 'good.json')
            with open(good, 'w') as f:
                json.dump({'iters': 500, 'runs': [_run('0.1', 80.0)]}, f)
            run, = ssc.read_runs([good])
            self.assertEqual((run['iters'], run['source']), (500, good))
            # main: one line naming the file, no traceback.
            with self.assertRaisesRegex(SystemExit, 'good.json: expected one '
                                        'run of an AdaFace model, found 0'):
                ssc.main(['--short', good, '--long', good,
                          '--long-baseline', good])
