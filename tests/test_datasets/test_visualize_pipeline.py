"""tools/visualize_pipeline.py writes a grid whose tinted cells follow the masks."""
import importlib.util
import os.path as osp
import tempfile
import unittest

import cv2
import numpy as np

from oaml_mm.datasets import write_occlusion_mask_sample
from .helpers import make_face

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        'visualize_pipeline', osp.join(ROOT, 'tools', 'visualize_pipeline.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class TestVisualizePipeline(unittest.TestCase):

    def test_occlusion_stream_grid(self):
        tool = _load_tool()
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(4):
                mask = np.ones((112, 112), np.float32)
                mask[56:] = 0
                write_occlusion_mask_sample(osp.join(tmp, 'occ'), f'a{i}',
                                            make_face(i, size=112), mask)
            cfg = osp.join(tmp, 'cfg.py')
            with open(cfg, 'w') as f:
                f.write(
                    "train_dataloader = dict(batch_size=4, dataset=dict("
                    f"type='OcclusionMaskDataset', data_root={tmp + '/occ'!r}, "
                    "pipeline=[dict(type='PackFaceInputs')]))\n"
                    "custom_hooks = [dict(type='DualLoaderHook', "
                    "occluded_ratio=1.0, occluded_dataloader=dict(dataset=dict("
                    f"type='OcclusionMaskDataset', data_root={tmp + '/occ'!r}, "
                    "pipeline=[dict(type='PackFaceInputs')])))]\n")
            out = osp.join(tmp, 'grid.png')
            tool.main([cfg, '--stream', 'occlusion', '--num', '2', '--out', out])
            grid = cv2.imread(out)[..., ::-1]
            self.assertEqual(grid.shape[1] % (3 * 112 + 4), 0)
            target = grid[:112, 224:336]  # 7x7 target of the first tile
            self.assertGreater(target[20, 50].mean(), 200)  # top visible: white
            self.assertLess(target[100, 50].mean(), 60)  # bottom occluded: black
            tinted = grid[:112, 112:224].astype(int)
            self.assertGreater(tinted[100, 10, 0] - tinted[100, 10, 1], 100)

    def test_tile_draws_the_targets_own_grid(self):
        # A 4x4 target (64x64 faces' maps) is drawn as 4x4 cells, not 7x7.
        import torch
        from mmpretrain.structures import DataSample

        from oaml_mm.visualization.pipeline_grid import pipeline_tile
        vis = torch.ones(1, 4, 4)
        vis[0, :, 3] = 0.0
        img = torch.full((3, 64, 64), 128, dtype=torch.uint8)
        sample = DataSample()
        sample.set_field(vis, 'gt_visibility')
        target = pipeline_tile(img, sample, size=112)[:, 224:].astype(int)
        lines = [x for x in range(1, 112) if (target[5, x] == 80).all()]
        self.assertEqual(lines, [28, 56, 84])
        self.assertLess(target[5, 100].mean(), 60)   # last column occluded
        self.assertGreater(target[5, 70].mean(), 200)

    def test_cfg_options_move_the_data_roots(self):
        # data_root / occlusion_data_root reach the copies the config made of
        # them, as in tools/train.py (a plain merge changed the top-level keys
        # only and the tool read /nonexistent).
        tool = _load_tool()
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(2):
                write_occlusion_mask_sample(osp.join(tmp, 'occ'), f'a{i}',
                                            make_face(i, size=112),
                                            np.ones((112, 112), np.float32))
            cfg = osp.join(tmp, 'cfg.py')
            with open(cfg, 'w') as f:
                f.write(
                    "data_root = '/nonexistent/occ'\n"
                    "occlusion_data_root = '/nonexistent/occ'\n"
                    "train_dataloader = dict(batch_size=2, dataset=dict("
                    "type='OcclusionMaskDataset', data_root=data_root, "
                    "pipeline=[dict(type='PackFaceInputs')]))\n"
                    "custom_hooks = [dict(type='DualLoaderHook', "
                    "occluded_ratio=1.0, occluded_dataloader=dict(dataset=dict("
                    "type='OcclusionMaskDataset', "
                    "data_root=occlusion_data_root, "
                    "pipeline=[dict(type='PackFaceInputs')])))]\n")
            out = osp.join(tmp, 'grid.png')
            occ = osp.join(tmp, 'occ')
            tool.main([cfg, '--stream', 'occlusion', '--num', '2', '--out', out,
                       '--cfg-options', f'data_root={occ}',
                       f'occlusion_data_root={occ}'])
            self.assertEqual(cv2.imread(out).shape[1] % (3 * 112 + 4), 0)

    def _occ_config(self, tmp, root, hook_batch=None, n=4):
        for i in range(n):
            write_occlusion_mask_sample(osp.join(tmp, 'occ'), f'a{i}',
                                        make_face(i, size=112),
                                        np.ones((112, 112), np.float32))
        cfg = osp.join(tmp, 'cfg.py')
        bs = '' if hook_batch is None else f'batch_size={hook_batch}, '
        with open(cfg, 'w') as f:
            f.write(
                "train_dataloader = dict(batch_size=4, dataset=dict("
                f"type='OcclusionMaskDataset', data_root={root!r}, "
                "pipeline=[dict(type='PackFaceInputs')]))\n"
                f"custom_hooks = [dict(type='DualLoaderHook', {bs}"
                "occluded_ratio=1.0, occluded_dataloader=dict(dataset=dict("
                f"type='OcclusionMaskDataset', data_root={root!r}, "
                "pipeline=[dict(type='PackFaceInputs')])))]\n")
        return cfg

    def test_occlusion_stream_draws_num_not_the_hooks_batch(self):
        # Before: the hook's batch_size=16 won and --num 4 drew 16 tiles.
        tool = _load_tool()
        with tempfile.TemporaryDirectory() as tmp:
            cfg = self._occ_config(tmp, osp.join(tmp, 'occ'), hook_batch=16)
            out = osp.join(tmp, 'grid.png')
            tool.main([cfg, '--stream', 'occlusion', '--num', '4',
                       '--out', out])
            # 4 tiles: ceil(sqrt(4 / 3)) = 2 per row, 2 rows (16: 3 x 6).
            self.assertEqual(cv2.imread(out).shape[:2],
                             (2 * 116, 2 * (3 * 112 + 4)))

    def test_bad_num_and_missing_data_give_one_line(self):
        # Before: --num 0 raised IndexError; a missing data root printed a
        # MissingFileError traceback.
        tool = _load_tool()
        with tempfile.TemporaryDirectory() as tmp:
            out = osp.join(tmp, 'grid.png')
            cfg = self._occ_config(tmp, osp.join(tmp, 'occ'))
            for stream in ('main', 'occlusion'):
                with self.subTest(stream=stream), \
                        self.assertRaises(SystemExit) as cm:
                    tool.main([cfg, '--stream', stream, '--num', '0',
                               '--out', out])
                self.assertEqual(cm.exception.code,
                                 'ConfigError: --num 0: expected at least '
                                 '1 sample')
            missing = osp.join(tmp, 'nothere')
            cfg = self._occ_config(tmp, missing)
            for stream in ('main', 'occlusion'):
                with self.subTest(stream=stream), \
                        self.assertRaises(SystemExit) as cm:
                    tool.main([cfg, '--stream', stream, '--out', out])
                msg = cm.exception.code
                self.assertIsInstance(msg, str)
                self.assertIn(missing, msg)
                self.assertEqual(len(msg.splitlines()), 1)
            self.assertFalse(osp.exists(out))

    def test_bad_out_refused_before_loading(self):
        # Before: cv2.imwrite failed silently and "wrote x.txt" was printed.
        tool = _load_tool()
        with tempfile.TemporaryDirectory() as tmp:
            for out, msg in ((osp.join(tmp, 'x.txt'), 'OpenCV cannot write'),
                             (tmp, 'is a directory')):
                with self.subTest(out=out), self.assertRaises(SystemExit) as cm:
                    tool.main(['none.py', '--out', out])
                self.assertEqual(cm.exception.code, 2)


if __name__ == '__main__':
    unittest.main()
