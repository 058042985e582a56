"""Training samples as the model receives them, with their visibility targets.

What ``tools/visualize_pipeline.py`` draws: :func:`pipeline_samples` draws packed
samples from a config's main training set or from its ``DualLoaderHook``'s
occlusion stream (augmentations included); :func:`pipeline_tile` shows one as
``image | occluded cells tinted red | visibility target grid`` and
:func:`pipeline_grid` lays the tiles out, so a person can check that masks follow
the pixels.
"""
import math
from typing import List, Sequence, Tuple

import cv2
import numpy as np

from oaml_mm.datasets.transforms.formatting import DEFAULT_GRID
from oaml_mm.errors import ConfigError

__all__ = ['pipeline_samples', 'pipeline_tile', 'pipeline_grid']


def pipeline_samples(cfg, stream: str = 'main', num: int = 16,
                     seed: int = 0) -> List[Tuple[object, object]]:
    """Draw ``num`` packed samples from the chosen stream.

    Args:
        cfg (Config): A training config; components must be registered
            (``oaml_mm.register_all_modules()``).
        stream (str): ``'main'`` (``train_dataloader.dataset``, samples drawn
            without replacement, at most its length) or ``'occlusion'`` (one
            batch of the first ``DualLoaderHook`` in ``custom_hooks``).
        num (int): Samples to draw, at least 1; the occlusion stream draws
            exactly ``num`` (the hook's own ``batch_size`` is overridden).
        seed (int): Seeds numpy's global generator and the occlusion stream.

    Returns:
        list[tuple]: ``(inputs [3, H, W] uint8 tensor, data sample)`` pairs.

    Raises:
        ConfigError: ``num`` is below 1; ``stream='occlusion'`` and the config
            has no ``DualLoaderHook``.
    """
    from oaml_mm.registry import DATASETS, HOOKS
    if int(num) < 1:
        raise ConfigError(f'--num {num}: expected at least 1 sample')
    np.random.seed(seed)
    if stream == 'main':
        ds = DATASETS.build(cfg.train_dataloader.dataset)
        idx = np.random.choice(len(ds), min(num, len(ds)), replace=False)
        items = [ds[int(i)] for i in idx]
        return [(x['inputs'], x['data_samples']) for x in items]
    hook_cfg = [h for h in cfg.get('custom_hooks', [])
                if h.get('type') == 'DualLoaderHook']
    if not hook_cfg:
        raise ConfigError('the config has no DualLoaderHook in custom_hooks')
    # The hook's own batch_size (e.g. 16 in the demo configs) would otherwise
    # override ``num``.
    hook = HOOKS.build(dict(hook_cfg[0], batch_size=int(num)))
    hook.build_streams(num, cfg.train_dataloader.get('dataset'), seed=seed)
    batch = hook.next_batch(0, 0)
    return list(zip(batch['inputs'], batch['data_samples']))


def pipeline_tile(inputs, data_sample, size: int = 112) -> np.ndarray:
    """One tile: the image, the image with occluded cells tinted, the target grid.

    Args:
        inputs (torch.Tensor): [3, H, W] RGB image before normalisation.
        data_sample: Its packed sample; ``gt_visibility`` [1, g, g] in [0, 1]
            (1 = visible) when it has one, else all visible on ``DEFAULT_GRID``.
        size (int): Side of each of the three panels in pixels.

    Returns:
        np.ndarray: [size, 3 * size, 3] uint8 RGB; occluded cells are red in
        the middle panel and black in the right one, with grey cell lines.
    """
    img = inputs.numpy().transpose(1, 2, 0).astype(np.float32)
    img = cv2.resize(img, (size, size))
    if 'gt_visibility' in data_sample:
        vis = data_sample.gt_visibility[0].numpy()
    else:
        vis = np.ones((DEFAULT_GRID, DEFAULT_GRID), np.float32)
    side = vis.shape[0]
    up = cv2.resize(vis, (size, size), interpolation=cv2.INTER_NEAREST)
    tinted = img.copy()
    tinted[..., 0] = img[..., 0] * up + 255 * (1 - up)
    tinted[..., 1:] = img[..., 1:] * (0.4 + 0.6 * up[..., None])
    cell = size // side
    grid = np.kron(vis, np.ones((cell, cell)))
    grid = cv2.resize(grid, (size, size), interpolation=cv2.INTER_NEAREST)
    grid_rgb = np.repeat(grid[..., None] * 255, 3, axis=2)
    for k in range(1, side):
        grid_rgb[:, k * size // side] = (80, 80, 80)
        grid_rgb[k * size // side, :] = (80, 80, 80)
    return np.concatenate([img, tinted, grid_rgb],
                          axis=1).clip(0, 255).astype(np.uint8)


def pipeline_grid(pairs: Sequence[Tuple[object, object]],
                  size: int = 112, gap: int = 4) -> np.ndarray:
    """Lay out the tiles of ``pairs`` in a roughly square grid on white.

    Args:
        pairs (Sequence[tuple]): ``(inputs, data sample)`` pairs
            (:func:`pipeline_samples`), at least one.
        size (int): Panel side (:func:`pipeline_tile`).
        gap (int): White pixels after each tile, right and below.

    Returns:
        np.ndarray: [rows * (size + gap), cols * (3 * size + gap), 3] uint8
        RGB, ``cols = ceil(sqrt(n / 3))`` tiles per row, filled row by row.
    """
    tiles = [pipeline_tile(x, d, size) for x, d in pairs]
    cols = max(1, int(math.ceil(math.sqrt(len(tiles) / 3))))
    rows = int(math.ceil(len(tiles) / cols))
    th, tw = tiles[0].shape[:2]
    canvas = np.full((rows * (th + gap), cols * (tw + gap), 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        canvas[r * (th + gap):r * (th + gap) + th,
               c * (tw + gap):c * (tw + gap) + tw] = t
    return canvas
