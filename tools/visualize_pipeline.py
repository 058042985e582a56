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
import sys

import cv2

from oaml_mm.utils import CfgOptionsAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='training config')
    parser.add_argument('--stream', choices=['main', 'occlusion'],
                        default='main', help='main train set or the '
                        "DualLoaderHook's occlusion stream")
    parser.add_argument('--out', default='pipeline_grid.png')
    parser.add_argument('--num', type=int, default=16)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                        help='override config keys, key=value')
    return parser.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    from oaml_mm import register_all_modules
    from oaml_mm.apis.runner_setup import exit_on_error
    from oaml_mm.errors import OAMLError
    from oaml_mm.utils import check_output_file, load_config
    from oaml_mm.visualization import pipeline_grid, pipeline_samples
    try:
        check_output_file(args.out, '--out', image=True)
        # data_root=... also moves the copies the data set configs made of it.
        cfg = load_config(args.config, args.cfg_options)
    except OAMLError as e:
        print(f'error: {e}', file=sys.stderr)
        raise SystemExit(2)
    register_all_modules()
    # A missing data root or a bad --num: one line, no traceback.
    with exit_on_error():
        pairs = pipeline_samples(cfg, args.stream, args.num, args.seed)
        canvas = pipeline_grid(pairs)
    if not cv2.imwrite(args.out, cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
        print(f'error: --out {args.out!r}: OpenCV could not write the picture',
              file=sys.stderr)
        raise SystemExit(2)
    print(f'wrote {args.out}: {len(pairs)} samples of the {args.stream} stream '
          '(image | occluded cells tinted red | 7x7 visibility target)')
    return args.out


if __name__ == '__main__':
    main()
