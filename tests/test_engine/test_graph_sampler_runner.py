"""GraphSampler in a real OAMLRunner: iteration-based loop, graph rebuilt at every
pass over the data, and a crashed run resumed mid-pass draws the reference batches."""
import json
import os.path as osp

import numpy as np
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.testing import RunnerTestCase

from oaml_mm.datasets import write_occlusion_mask_sample
from oaml_mm.registry import HOOKS, RUNNERS
from tests.test_apis.helpers import face
from tests.toy_components import Interrupt

N_CLASSES, PER_CLASS = 6, 2


@HOOKS.register_module(force=True)
class BatchKeyRecorderHook(Hook):
    """Append ``{"iter": i, "keys": [...]}`` of every training batch."""

    priority = 'VERY_LOW'

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        keys = [s.key for s in data_batch['data_samples']]
        with open(osp.join(runner.work_dir, 'batches.jsonl'), 'a') as f:
            f.write(json.dumps(dict(iter=runner.iter, keys=keys)) + '\n')


def _read(work_dir):
    out = {}
    with open(osp.join(work_dir, 'batches.jsonl')) as f:
        for line in f:
            item = json.loads(line)
            out[item['iter']] = item['keys']
    return out


class TestGraphSamplerRunner(RunnerTestCase):

    def setUp(self):
        super().setUp()
        self.data = osp.join(self.temp_dir.name, 'faces')
        with open(osp.join(self.temp_dir.name, 'labels.txt'), 'w') as f:
            for c in range(N_CLASSES):
                for j in range(PER_CLASS):
                    mask = np.ones((112, 112), np.float32)
                    write_occlusion_mask_sample(self.data, f'{c}/{j}',
                                                face(c * 10 + j), mask)
                    f.write(f'{c}/{j} {c}\n')

    def _cfg(self, work_dir, resume=False, hooks=(), num_workers=0):
        model = dict(
            type='OAMLRecognizer',
            backbone=dict(type='IResNet', depth=18, width_mult=0.125,
                          embedding_size=16, dropout=0.0),
            head=dict(type='AdaFaceHead', in_channels=16,
                      num_classes=N_CLASSES),
            qaconv_head=dict(type='QAConvHead', in_channels=64),
            loss_weights=dict(adaface=0.1, qaconv=0.9, occlusion=0.0))
        cfg = dict(
            default_scope='oaml_mm', runner_type='OAMLRunner',
            work_dir=work_dir, model=model,
            train_dataloader=dict(
                batch_size=4, num_workers=num_workers,
                persistent_workers=False,
                sampler=dict(type='GraphSampler', batch_size=4,
                             num_instances=2),
                dataset=dict(type='OcclusionMaskDataset', data_root=self.data,
                             ann_file='../labels.txt',
                             pipeline=[dict(type='PackFaceInputs')])),
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05,
                                              momentum=0.9)),
            train_cfg=dict(type='IterBasedTrainLoop', max_iters=15),
            default_hooks=dict(
                checkpoint=dict(type='CheckpointHook', interval=8,
                                by_epoch=False),
                logger=dict(type='LoggerHook', interval=5)),
            custom_hooks=[dict(type='GraphSamplerHook', batch_size=8),
                          dict(type='BatchKeyRecorderHook'), *hooks],
            env_cfg=dict(dist_cfg=dict(backend='gloo')),
            randomness=dict(seed=7), log_level='WARNING', resume=resume)
        cfg = Config(cfg)
        cfg.experiment_name = f'{self.experiment_name}_{osp.basename(work_dir)}'
        return cfg

    def test_resume_mid_pass_draws_reference_batches(self):
        # 6 anchors x 4 images = 6 iterations per pass: passes start at 0, 6, 12.
        ref_dir = osp.join(self.temp_dir.name, 'ref')
        RUNNERS.build(self._cfg(ref_dir)).train()
        ref = _read(ref_dir)
        self.assertEqual(len(ref), 15)
        for keys in ref.values():
            labels = [k.split('/')[0] for k in keys]
            # anchor + 1 neighbour, K = 2 each
            self.assertEqual(labels[0], labels[1])
            self.assertEqual(labels[2], labels[3])
            self.assertNotEqual(labels[0], labels[2])
        # Each pass has every class as an anchor once.
        for start in (0, 6):
            anchors = {ref[i][0].split('/')[0] for i in range(start, start + 6)}
            self.assertEqual(len(anchors), N_CLASSES)

        # Crash after iteration 10 (checkpoint at 8, in the second pass).
        run_dir = osp.join(self.temp_dir.name, 'run')
        with self.assertRaises(Interrupt):
            RUNNERS.build(self._cfg(
                run_dir, hooks=[dict(type='InterruptHook', at_iter=10)])).train()
        RUNNERS.build(self._cfg(run_dir, resume=True)).train()
        got = _read(run_dir)
        for it in range(15):
            self.assertEqual(got[it], ref[it], f'iteration {it}')

    def test_workers_wait_for_the_graph(self):
        # mmengine starts a worker loader when the loop is built, before the
        # before_train hooks: this failed with "GraphSampler has no graph builder".
        work = osp.join(self.temp_dir.name, 'workers')
        cfg = self._cfg(work, num_workers=1)
        cfg.train_cfg.max_iters = 3
        RUNNERS.build(cfg).train()
        got = _read(work)
        self.assertEqual(len(got), 3)
        for keys in got.values():
            labels = [k.split('/')[0] for k in keys]
            self.assertEqual(labels[0], labels[1])
