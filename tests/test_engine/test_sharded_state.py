"""Sharded parameters in training: a 2-process PartialFCHead run, killed and resumed.

``tools/dist_train.sh`` (torchrun, 2 gloo CPU processes) trains the SynthFace
PartialFCHead config, made tiny with ``--cfg-options``: an uninterrupted run, and a run
SIGKILLed after iteration 5 then resumed from its iteration-4 checkpoint. The resumed
run must end with the same weights and losses. The checkpoint then loads on 1 and 3
processes: each rank gets its columns of the whole kernel and of its momentum.
"""
import os.path as osp
import tempfile
from unittest import TestCase

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.config import Config

from oaml_mm.engine.runner.sharded_state import (ddp_ignored_names,
                                                 shard_optimizer_state)
from oaml_mm.models.heads import PartialFCHead
from oaml_mm.synthface import SynthFaceConfig, generate_synthface
from oaml_mm.utils import merge_cfg_options, safe_load_checkpoint, shard_range
from tests.reliability._util import ROOT, free_port, run_tool, tool_env
from tests.toy_components import read_losses

CONFIG = osp.join(ROOT, 'configs', 'synthface',
                  'adaface_ir18_pfc_2xb16_synthface.py')
ITERS, KILL_AFTER = 6, 5
# A tiny SynthFace of its own: a fresh clone has no data/ folder.
TINY = SynthFaceConfig(identities=8, images_per_id=4, test_identities=6,
                       occluded_per_id=2, val_images_per_id=4, val_pairs=40,
                       ijbc_subjects=3, ijbc_probe_templates=1)


def _write_config(path: str, work_dir: str, kill: bool, data: str) -> str:
    cfg = Config.fromfile(CONFIG)
    merge_cfg_options(cfg, dict(data_root=data, occlusion_data_root=data))
    cfg.work_dir = work_dir
    cfg.custom_imports = dict(imports=['tests.toy_components'],
                              allow_failed_imports=False)
    cfg.train_cfg.max_iters = ITERS
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
    cfg.default_hooks.checkpoint.interval = 2
    cfg.default_hooks.checkpoint.max_keep_ckpts = 3
    cfg.default_hooks.logger.interval = 1
    cfg.train_dataloader.batch_size = 8
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    for key in ('val_cfg', 'val_dataloader', 'val_evaluator'):
        cfg[key] = None
    cfg.default_hooks.threshold_calibration = None
    hooks = [dict(type='LossRecorderHook'), dict(type='FinalWeightsHook')]
    if kill:
        hooks.append(dict(type='InterruptHook', at_iter=KILL_AFTER,
                          sigkill=True))
    cfg.custom_hooks = list(cfg.custom_hooks) + hooks
    cfg.dump(path)
    return path


def _dist_train(cfg: str, *extra: str):
    env = tool_env()
    env['PORT'] = str(free_port())
    return run_tool(['bash', 'tools/dist_train.sh', cfg, '2', *extra],
                    timeout=400, env=env)


def _load_worker(rank: int, world: int, ckpt_path: str, init_file: str,
                 out_dir: str) -> None:
    if world > 1:
        dist.init_process_group('gloo', init_method=f'file://{init_file}',
                                rank=rank, world_size=world)
    try:
        ckpt = safe_load_checkpoint(ckpt_path)
        head = PartialFCHead(in_channels=128, num_classes=400,
                             margin_head=dict(type='AdaFaceHead', s=16.0))
        state = {k[len('head.'):]: v for k, v in ckpt['state_dict'].items()
                 if k.startswith('head.')}
        head.load_state_dict(state)
        model = torch.nn.ModuleDict(dict(head=head))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

        class Wrapper:
            pass

        wrapper = Wrapper()
        wrapper.optimizer = optimizer
        # The checkpoint's optimizer indexes the whole model's parameters;
        # keep the kernel's entry only, renumbered to this optimizer's 0.
        kernel_idx = [i for i, s in ckpt['optimizer']['state'].items()
                      if s.get('momentum_buffer', torch.zeros(0)).shape ==
                      (128, 400)]
        saved = dict(state={0: dict(ckpt['optimizer']['state'][kernel_idx[0]])},
                     param_groups=[dict(ckpt['optimizer']['param_groups'][0],
                                        params=[0])])
        shard_optimizer_state(dict(optimizer=saved), model, wrapper)
        optimizer.load_state_dict(saved)
        start, end = shard_range(400, world, rank)
        whole = ckpt['state_dict']['head.kernel']
        momentum = ckpt['optimizer']['state'][kernel_idx[0]]
        result = dict(
            kernel=bool(torch.equal(head.kernel.detach(), whole[:, start:end])),
            momentum=bool(torch.equal(
                optimizer.state[head.kernel]['momentum_buffer'],
                momentum['momentum_buffer'][:, start:end])),
            step=int(head.step),
            width=end - start,
            ignored=ddp_ignored_names(model))
        torch.save(result, osp.join(out_dir, f'{rank}.pth'))
    finally:
        if world > 1:
            dist.destroy_process_group()


class TestPartialFCKillResume(TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        t = cls.tmp.name
        cls.data = osp.join(t, 'synthface')
        generate_synthface(cls.data, TINY, workers=1, log=None)
        cls.ref_work = osp.join(t, 'ref')
        proc = _dist_train(_write_config(osp.join(t, 'ref.py'), cls.ref_work,
                                         kill=False, data=cls.data))
        assert proc.returncode == 0, proc.stderr[-4000:]

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_killed_and_resumed_equals_uninterrupted(self):
        t = self.tmp.name
        work = osp.join(t, 'killed')
        killed = _dist_train(_write_config(osp.join(t, 'kill.py'), work,
                                           kill=True, data=self.data))
        self.assertNotEqual(killed.returncode, 0)
        self.assertTrue(osp.isfile(osp.join(work, 'iter_4.pth')))
        self.assertFalse(osp.isfile(osp.join(work, 'iter_6.pth')))
        resumed = _dist_train(
            _write_config(osp.join(t, 'resume.py'), work, kill=False,
                          data=self.data),
            '--resume')
        self.assertEqual(resumed.returncode, 0, resumed.stderr[-4000:])
        ref = read_losses(self.ref_work)
        got = read_losses(work)
        # Keys are runner.iter (0-based): the resumed run redid 4 and 5.
        self.assertEqual(sorted(got), list(range(ITERS)))
        for it in range(4, ITERS):
            self.assertAlmostEqual(got[it], ref[it], places=5, msg=it)
        for rank in (0, 1):
            a = torch.load(osp.join(self.ref_work, f'final-rank{rank}.pth'))
            b = torch.load(osp.join(work, f'final-rank{rank}.pth'))
            self.assertEqual(tuple(a['head.kernel'].shape), (128, 400))
            for key in a:
                if rank and 'running_' in key:
                    # BatchNorm statistics are per rank on CPU DDP
                    # (broadcast_buffers=False); a checkpoint holds rank 0's.
                    continue
                torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6,
                                           msg=key)

    def test_whole_head_in_checkpoint_loads_on_1_and_3_processes(self):
        path = osp.join(self.ref_work, f'iter_{ITERS}.pth')
        ckpt = safe_load_checkpoint(path)
        self.assertEqual(tuple(ckpt['state_dict']['head.kernel'].shape),
                         (128, 400))
        self.assertEqual(int(ckpt['state_dict']['head.step']), ITERS)
        for world in (1, 3):
            with tempfile.TemporaryDirectory() as tmp:
                mp.start_processes(
                    _load_worker,
                    args=(world, path, osp.join(tmp, 'init'), tmp),
                    nprocs=world, start_method='fork')
                results = [torch.load(osp.join(tmp, f'{r}.pth'))
                           for r in range(world)]
            self.assertEqual(sum(r['width'] for r in results), 400)
            for r in results:
                self.assertTrue(r['kernel'], (world, r))
                self.assertTrue(r['momentum'], (world, r))
                self.assertEqual(r['step'], ITERS)
                self.assertEqual(r['ignored'], ['head.kernel'])
