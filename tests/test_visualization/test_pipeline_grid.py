"""oaml_mm.visualization.pipeline_grid: the tiles of tools/visualize_pipeline.py."""
import unittest

import torch
from mmengine.config import Config
from mmengine.structures import BaseDataElement

from oaml_mm.errors import ConfigError
from oaml_mm.visualization import (pipeline_grid, pipeline_samples,
                                   pipeline_tile)


def _sample(vis=None):
    inputs = torch.full((3, 112, 112), 100, dtype=torch.uint8)
    sample = BaseDataElement()
    if vis is not None:
        sample.gt_visibility = vis[None]
    return inputs, sample


class TestPipelineGrid(unittest.TestCase):

    def test_tile_tints_and_draws_the_target(self):
        vis = torch.ones(7, 7)
        vis[4:] = 0  # bottom three rows occluded
        tile = pipeline_tile(*_sample(vis))
        self.assertEqual(tile.shape, (112, 336, 3))
        self.assertEqual(tile[100, 50].tolist(), [100, 100, 100])  # image
        self.assertEqual(tile[10, 112 + 50].tolist(), [100, 100, 100])
        self.assertEqual(tile[100, 112 + 50].tolist(), [255, 40, 40])  # red
        self.assertEqual(tile[10, 224 + 50].tolist(), [255, 255, 255])
        self.assertEqual(tile[100, 224 + 50].tolist(), [0, 0, 0])
        self.assertEqual(tile[10, 224 + 16].tolist(), [80, 80, 80])  # line
        # Without a target: all visible, nothing tinted.
        plain = pipeline_tile(*_sample())
        self.assertEqual(plain[100, 112 + 50].tolist(), [100, 100, 100])

    def test_grid_layout(self):
        grid = pipeline_grid([_sample() for _ in range(4)])
        # ceil(sqrt(4 / 3)) = 2 tiles per row, 2 rows, 4 white pixels after each.
        self.assertEqual(grid.shape, (2 * 116, 2 * 340, 3))
        self.assertEqual(grid[113, 5].tolist(), [255, 255, 255])
        self.assertEqual(grid[116 + 5, 340 + 5].tolist(), [100, 100, 100])
        self.assertEqual(pipeline_grid([_sample()] * 5).shape,
                         (3 * 116, 2 * 340, 3))

    def test_occlusion_stream_needs_the_hook(self):
        cfg = Config(dict(train_dataloader=dict(dataset=dict()),
                          custom_hooks=[dict(type='EMAHook')]))
        with self.assertRaisesRegex(
                ConfigError, '^the config has no DualLoaderHook in '
                'custom_hooks$'):
            pipeline_samples(cfg, 'occlusion', 2)


if __name__ == '__main__':
    unittest.main()
