"""Two CPU processes (gloo): PKSampler + DualLoaderHook over small .rec / mask files.

Each rank sees K images of P distinct identities per batch, the ranks' identities are
disjoint and together cover every identity, and every step carries an 80/20 occlusion
stream. Seeds are left to ``sync_random_seed`` so the broadcast path is used too.
"""
import json
import os
import os.path as osp
import socket
import tempfile
import unittest

import numpy as np
import torch.multiprocessing as mp

from .helpers import encode, make_face


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _worker(rank, world, port, root, out):
    import torch
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        from mmengine.dataset import pseudo_collate
        from torch.utils.data import DataLoader

        import oaml_mm  # noqa: F401
        from oaml_mm.datasets import MXFaceDataset, PKSampler
        from oaml_mm.engine.hooks import DualLoaderHook
        ds = MXFaceDataset(osp.join(root, 'rec'),
                           pipeline=[dict(type='PackFaceInputs')])
        sampler = PKSampler(ds, batch_size=8, num_instances=4)
        loader = DataLoader(ds, batch_size=8, sampler=sampler,
                            collate_fn=pseudo_collate, num_workers=0)
        hook = DualLoaderHook(
            dict(num_workers=0, dataset=dict(
                type='OcclusionMaskDataset', data_root=osp.join(root, 'occ'),
                pipeline=[dict(type='PackFaceInputs')])),
            dict(dataset=dict(type='MXFaceDataset',
                              data_root=osp.join(root, 'rec'),
                              pipeline=[dict(type='PackFaceInputs')])),
            occluded_ratio=0.8, batch_size=10)
        hook.build_streams(10)
        log = []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            for step, batch in enumerate(loader):
                hook.before_train_iter(type('R', (), {'epoch': epoch}), step,
                                       batch)
                occ = batch['occlusion']['data_samples']
                log.append(dict(
                    epoch=epoch,
                    labels=[int(d.gt_label) for d in batch['data_samples']],
                    occ_vis=[float(d.gt_visibility.mean()) for d in occ],
                    occ_keys=[str(d.key) for d in occ[:8]],
                    shard_len=hook.streams[0]['dataset'].__len__() // world))
        with open(osp.join(out, f'rank{rank}.json'), 'w') as f:
            json.dump(log, f)
    finally:
        dist.destroy_process_group()


class TestTwoProcesses(unittest.TestCase):

    def test_pk_and_dual_loader_under_ddp(self):
        from oaml_mm.datasets import (write_insightface_rec,
                                      write_occlusion_mask_sample)
        with tempfile.TemporaryDirectory() as tmp:
            num_ids = 8
            write_insightface_rec(
                osp.join(tmp, 'rec'),
                [(encode(make_face(lab, i)), lab) for lab in range(num_ids)
                 for i in range(1 + lab % 3)], num_classes=num_ids)
            for i in range(10):
                mask = np.ones((32, 32), np.float32)
                mask[16:] = 0
                write_occlusion_mask_sample(osp.join(tmp, 'occ'), f'o{i}',
                                            make_face(i, size=32), mask)
            # fork: the children reuse this process's imports (seconds, not tens)
            mp.start_processes(_worker, args=(2, _free_port(), tmp, tmp),
                               nprocs=2, join=True, start_method='fork')
            logs = [json.load(open(osp.join(tmp, f'rank{r}.json')))
                    for r in range(2)]
        self.assertEqual(len(logs[0]), len(logs[1]))
        for epoch in range(2):
            ids = []
            occ_keys = []
            for log in logs:
                steps = [s for s in log if s['epoch'] == epoch]
                self.assertEqual(len(steps), 2)  # 4 identities per rank, P = 2
                mine = set()
                for s in steps:
                    lab = np.array(s['labels']).reshape(2, 4)
                    self.assertTrue((lab == lab[:, :1]).all())
                    self.assertNotEqual(lab[0, 0], lab[1, 0])
                    mine.update(lab[:, 0].tolist())
                    vis = np.array(s['occ_vis'])
                    self.assertEqual(len(vis), 10)
                    np.testing.assert_allclose(vis[:8], 0.5, atol=1e-6)
                    np.testing.assert_allclose(vis[8:], 1.0)
                    # the first pass of each rank: its own shard
                    occ_keys.append(set(s['occ_keys'][:s['shard_len']]))
                ids.append(mine)
            self.assertFalse(ids[0] & ids[1])
            self.assertEqual(ids[0] | ids[1], set(range(8)))
        # first step of each rank: disjoint shards of the occluded set
        self.assertFalse(occ_keys[0] & occ_keys[2])


if __name__ == '__main__':
    unittest.main()
