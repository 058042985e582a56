"""Single-process and 2- and 3-process (gloo) evaluation give the same numbers."""
import json
import os
import os.path as osp
import tempfile
import unittest

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _run(rank, world, init_file, root, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init_file}',
                            rank=rank, world_size=world)
    try:
        import oaml_mm  # noqa: F401
        from oaml_mm.evaluation.metrics import IJBMetric, VerificationMetric
        from tests.test_evaluation.fakes import (FakeMatcherModel, feed,
                                                 verification_samples,
                                                 write_ijb)
        results = {}
        ijb = write_ijb(root) if rank == 0 else None
        dist.barrier()
        if ijb is None:
            ijb = write_ijb(root)  # same seed: identical samples
        ver = verification_samples(num_pairs=30, wrong=(1, 4, 7))
        for name, metric, samples in (
                ('ver', VerificationMetric('lfw', progress=False), ver),
                ('ijb', IJBMetric('ijbc', data_root=root, fars=(0.2, 0.5),
                                  gallery_files=('meta/g1.csv', 'meta/g2.csv'),
                                  probe_file='meta/probe.csv',
                                  progress=False, pair_chunk=3), ijb),
                ('ijb_pool', IJBMetric('ijbc', data_root=root, fars=(0.2, 0.5),
                                       gallery_files=('meta/g1.csv',
                                                      'meta/g2.csv'),
                                       probe_file='meta/probe.csv',
                                       pooling=('mean', 'visibility'),
                                       progress=False, pair_chunk=3), ijb)):
            metric.bind_model(FakeMatcherModel())
            # What DefaultSampler(shuffle=False, round_up=True) hands this rank:
            # positions rank, rank+W, ... of the list padded with its head.
            n = len(samples)
            total = -(-n // world) * world
            padded = samples + samples[:total - n]
            metric.set_dataset_size(n)
            feed(metric, padded[rank:total:world], batch=4)
            results[name] = metric.evaluate(n)
        with open(osp.join(out_dir, f'{world}_{rank}.json'), 'w') as f:
            json.dump(results, f)
    finally:
        dist.destroy_process_group()


class TestDistributedAgreement(unittest.TestCase):

    def test_one_vs_two_processes(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = osp.join(tmp, 'ijbc')
            for world in (1, 2, 3):
                init = osp.join(tmp, f'init{world}')
                mp.start_processes(_run, args=(world, init, root, tmp),
                                   nprocs=world, start_method='fork')
            runs = {}
            for name in os.listdir(tmp):
                if name.endswith('.json'):
                    with open(osp.join(tmp, name)) as f:
                        runs[name[:-5]] = json.load(f)
            one = runs['1_0']
            self.assertTrue(one['ver'] and one['ijb'])
            self.assertIn('lfw/qaconv/accuracy', one['ver'])
            self.assertIn('ijbc/fused/1N_rank1', one['ijb'])
            # Both pooling rules from one pass, the 'mean' one unchanged.
            self.assertIn('ijbc/fused_vispool/1N_rank1', one['ijb_pool'])
            for k, v in one['ijb'].items():
                self.assertEqual(one['ijb_pool'][k], v, k)
            for key in ('2_0', '2_1', '3_0', '3_1', '3_2'):
                for part in ('ver', 'ijb', 'ijb_pool'):
                    self.assertEqual(set(runs[key][part]), set(one[part]))
                    for k, v in one[part].items():
                        self.assertAlmostEqual(runs[key][part][k], v, places=4,
                                               msg=k)
                # Fixed-point template sums: the pooled templates, and so the
                # figures, are the same bits whatever the split.
                self.assertEqual(runs[key]['ijb_pool'], one['ijb_pool'])
