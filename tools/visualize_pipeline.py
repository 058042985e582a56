"""Dump augmented training images with their visibility masks as a PNG grid.

Each tile is the image as the model receives it (RGB, before normalisation) with the
occluded part tinted red (``1 - visibility`` at full resolution for transform outputs)
and the 7x7 ``gt_visibility`` target drawn as a grid of numbers-free cells on its
right, so a person can check that masks follow the pixels.

Examples:
    python tools/visualize_pipeline.py configs/oaml_ir50.py --out main.png
    python tools/visualize_pipeline.py CONFIG --stream occlusion --num 16 --out occ.png
"""
import argparse
import math
import sys

import cv2
import numpy as np
from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='training config')
    parser.add_argument('--stream', choices=['main', 'occlusion'],
                        default='main', help='main train set or the '
                        "DualLoaderHook's occlusion stream")
    parser.add_argument('--out', default='pipeline_grid.png')
    parser.add_argument('--num', type=int, default=16)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, key=value')
    return parser.parse_args(argv)


def tile(inputs, data_sample, size: int = 112) -> np.ndarray:
    """One tile: the image with occluded cells tinted, and the visibility target
    beside it on its own grid (the model's: 7x7 for 112x112 faces)."""
    from oaml_mm.datasets.transforms.formatting import DEFAULT_GRID
    img = inputs.numpy().transpose(1, 2, 0).astype(np.float32)
    img = cv2.resize(img, (size, size))
    if 'gt_visibility' in data_sample:
        vis = data_sample.gt_visibility[0].numpy()
    else:
        vis = np.ones((DEFAULT_GRID, DEFAULT_GRID), np.float32)
    up = cv2.resize(vis, (size, size), interpolation=cv2.INTER_NEAREST)
    tinted = img.copy()
    tinted[..., 0] = img[..., 0] * up + 255 * (1 - up)
    tinted[..., 1:] = img[..., 1:] * (0.4 + 0.6 * up[..., None])
    rows, cols = vis.shape
    grid_rgb = np.repeat(up[..., None] * 255, 3, axis=2)
    for k in range(1, cols):
        grid_rgb[:, k * size // cols] = (80, 80, 80)
    for k in range(1, rows):
        grid_rgb[k * size // rows, :] = (80, 80, 80)
    return np.concatenate([img, tinted, grid_rgb],
                          axis=1).clip(0, 255).astype(np.uint8)


def collect(cfg, stream: str, num: int, seed: int):
    """Draw ``num`` packed samples from the chosen stream."""
    from oaml_mm.registry import DATASETS, HOOKS
    np.random.seed(seed)
    if stream == 'main':
        ds = DATASETS.build(cfg.train_dataloader.dataset)
        idx = np.random.choice(len(ds), min(num, len(ds)), replace=False)
        items = [ds[int(i)] for i in idx]
        return [(x['inputs'], x['data_samples']) for x in items]
    hook_cfg = [h for h in cfg.get('custom_hooks', [])
                if h.get('type') == 'DualLoaderHook']
    if not hook_cfg:
        raise SystemExit('the config has no DualLoaderHook in custom_hooks')
    hook = HOOKS.build(hook_cfg[0])
    hook.build_streams(num, cfg.train_dataloader.get('dataset'), seed=seed)
    batch = hook.next_batch(0, 0)
    return list(zip(batch['inputs'], batch['data_samples']))


def main(argv=None) -> str:
    args = parse_args(argv)
    from oaml_mm import register_all_modules
    from oaml_mm.errors import OAMLError
    from oaml_mm.utils import check_output_file, load_config
    try:
        check_output_file(args.out, '--out', image=True)
        # data_root=... also moves the copies the data set configs made of it.
        cfg = load_config(args.config, args.cfg_options)
    except OAMLError as e:
        print(f'error: {e}', file=sys.stderr)
        raise SystemExit(2)
    register_all_modules()
    pairs = collect(cfg, args.stream, args.num, args.seed)
    tiles = [tile(x, d) for x, d in pairs]
    cols = max(1, int(math.ceil(math.sqrt(len(tiles) / 3))))
    rows = int(math.ceil(len(tiles) / cols))
    th, tw = tiles[0].shape[:2]
    canvas = np.full((rows * (th + 4), cols * (tw + 4), 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        canvas[r * (th + 4):r * (th + 4) + th, c * (tw + 4):c * (tw + 4) + tw] = t
    if not cv2.imwrite(args.out, cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
        print(f'error: --out {args.out!r}: OpenCV could not write the picture',
              file=sys.stderr)
        raise SystemExit(2)
    print(f'wrote {args.out}: {len(tiles)} samples of the {args.stream} stream '
          '(image | occluded cells tinted red | 7x7 visibility target)')
    return args.out


if __name__ == '__main__':
    main()
