"""Contact sheets of a configured data set: samples after the pipeline, masks, labels.

Examples:
    python tools/analysis/browse_dataset.py configs/synthface/oaml_ir18_synthface.py \
        --out sheet.png --num 48
    python tools/analysis/browse_dataset.py CONFIG --split test --num 16 --no-mask
"""
import argparse
import sys

from oaml_mm.utils import CfgOptionsAction


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('--split', default='train', choices=('train', 'val', 'test'))
    p.add_argument('--part', type=int, default=None,
                   help='only this part of a ConcatDataset')
    p.add_argument('--out', default='dataset_sheet.png')
    p.add_argument('--num', type=int, default=32, help='samples (default 32)')
    p.add_argument('--cols', type=int, default=8)
    p.add_argument('--seed', type=int, default=None,
                   help='draw random samples with this seed (default: the first)')
    p.add_argument('--no-mask', action='store_true', help='no visibility tint')
    p.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                   help='override config keys, key=value; data_root=DIR (and '
                   'val_/test_/occlusion_data_root) moves a data set '
                   '(docs/data_layout.md)')
    args = p.parse_args(argv)

    import cv2
    import numpy as np

    from oaml_mm.datasets.curation import build_split_dataset
    from oaml_mm.errors import OAMLError
    from oaml_mm.utils.config import load_config
    from oaml_mm.visualization import dataset_contact_sheet
    try:
        cfg = load_config(args.config, args.cfg_options)
        # What training sees: the configured pipeline, augmentation included.
        ds = build_split_dataset(cfg, args.split, args.part,
                                 pipeline='configured')
        n = min(args.num, len(ds))
        idx = np.arange(n) if args.seed is None else np.sort(
            np.random.default_rng(args.seed).choice(len(ds), n, replace=False))
        sheet = dataset_contact_sheet(ds, idx, cols=args.cols,
                                      show_mask=not args.no_mask)
    except OAMLError as e:
        print(f'browse_dataset: {e}', file=sys.stderr)
        return 2
    cv2.imwrite(args.out, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f'{n} samples of {len(ds)} -> {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
