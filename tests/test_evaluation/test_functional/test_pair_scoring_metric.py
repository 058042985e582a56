"""IJBMetric's tiled listed-pair scoring: tile sizes, the DDP split and the BN guard."""
import json
import os.path as osp
import tempfile
import unittest

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from oaml_mm.evaluation.metrics import IJBMetric
from ..fakes import FakeMatcherModel, feed, toy_pair_score, write_ijb

# Every ordered pair of the 5 templates: several tiles at pair_tile 1 or 2.
PAIRS = [(a, b, int(a == b + 1)) for a in range(1, 6) for b in range(1, 6)
         if a != b]


def _metric(root, tile, **kw):
    return IJBMetric('ijbc', data_root=root, subset='IJBC', fars=(0.2, 0.5),
                     progress=False, pair_tile=tile, pair_chunk=3, **kw)


def _run(rank, world, init_file, root, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init_file}',
                            rank=rank, world_size=world)
    try:
        # One folder per rank (same seed, same files): no rank reads a file
        # another one is writing.
        root = f'{root}_{world}_{rank}'
        samples = write_ijb(root, with_1n=True, pairs=PAIRS)
        m = _metric(root, 2, gallery_files=('meta/g1.csv', 'meta/g2.csv'),
                    probe_file='meta/probe.csv')
        m.bind_model(FakeMatcherModel())
        n = len(samples)
        total = -(-n // world) * world
        padded = samples + samples[:total - n]
        m.set_dataset_size(n)
        feed(m, padded[rank:total:world], batch=2)
        r = m.evaluate(n)
        r['scores'] = {k: v.tolist() for k, v in m.scores.items()}
        with open(osp.join(out_dir, f'{world}_{rank}.json'), 'w') as f:
            json.dump(r, f)
    finally:
        dist.destroy_process_group()


class BNModel(FakeMatcherModel):
    """A model with a BatchNorm: its dense ``match`` is only valid in eval mode."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(1)
        self.dense_calls = 0

    def match(self, p, g, pv=None, gv=None):
        self.dense_calls += 1
        return super().match(p, g, pv, gv)


class TestIJBTiledScoring(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = osp.join(self.tmp.name, 'ijbc')
        self.samples = write_ijb(self.root, with_1n=False, pairs=PAIRS)

    def tearDown(self):
        self.tmp.cleanup()

    def _scores(self, tile, model=None):
        m = _metric(self.root, tile)
        m.bind_model(model or FakeMatcherModel())
        feed(m, self.samples, batch=4)
        r = m.evaluate(len(self.samples))
        return m.scores, r

    def test_tile_sizes_agree_with_rowwise_reference(self):
        ref, r_ref = self._scores(256)
        maps = vis = None
        for tile in (1, 2, 3):
            got, r = self._scores(tile)
            for k in ('adaface', 'qaconv', 'fused'):
                np.testing.assert_allclose(got[k], ref[k], atol=1e-5, err_msg=k)
            self.assertEqual(set(r), set(r_ref))
        # The QAConv scores are those of the row-wise matcher on the pooled maps.
        m = _metric(self.root, 2)
        feed(m, self.samples, batch=4)
        m._load_meta()
        maps, vis = m.acc.maps().float(), m.acc.visibility()
        a, b = m.pair_a, m.pair_b
        np.testing.assert_allclose(
            ref['qaconv'], toy_pair_score(maps[a], maps[b], vis[a], vis[b]),
            atol=5e-4)

    def test_training_bn_keeps_rowwise(self):
        model = BNModel()
        train_scores, _ = self._scores(2, model)
        self.assertEqual(model.dense_calls, 0)
        model.eval()
        eval_scores, _ = self._scores(2, model)
        self.assertGreater(model.dense_calls, 0)
        np.testing.assert_allclose(train_scores['qaconv'],
                                   eval_scores['qaconv'], atol=1e-5)

    def test_one_two_three_processes_give_identical_figures(self):
        # 20 pairs (each also listed reversed: exact score ties that a 1-ulp
        # difference would break) over 1, 2 and 3 ranks at tile 2: a rank's share
        # starts inside the tile order, and every template's images are split
        # over the ranks. Scores and every figure must be bit-identical.
        with tempfile.TemporaryDirectory() as tmp:
            root = osp.join(tmp, 'ijbc')
            for world in (1, 2, 3):
                mp.start_processes(_run, args=(world, osp.join(tmp, f'i{world}'),
                                               root, tmp),
                                   nprocs=world, start_method='fork')
            runs = {}
            for k in ('1_0', '2_0', '2_1', '3_0', '3_2'):
                with open(osp.join(tmp, k + '.json')) as f:
                    runs[k] = json.load(f)
        one = runs['1_0']
        self.assertIn('ijbc/fused/AUC', one)
        self.assertIn('ijbc/qaconv/1N_rank1', one)
        for k in ('2_0', '2_1', '3_0', '3_2'):
            for b in ('adaface', 'qaconv', 'fused'):
                np.testing.assert_array_equal(runs[k]['scores'][b],
                                              one['scores'][b], err_msg=k + b)
            self.assertEqual(set(runs[k]), set(one))
            for key, v in one.items():
                if key != 'scores':
                    self.assertEqual(runs[k][key], v, msg=f'{k} {key}')


if __name__ == '__main__':
    unittest.main()
