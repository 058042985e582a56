"""Filter a data set by true visibility, image quality and face detection into a list.

Writes the kept samples in the list format the data set class reads as ``ann_file``
(FaceImageFolder: ``<relative path> <label>``; OcclusionMaskDataset: ``<name>
<label>``), and optionally every sample's measurements as a TSV.

Examples:
    python tools/dataset_converters/filter_dataset.py CONFIG --part 1 \
        --min-visibility 0.3 --min-sharpness 20 --out data/niqab/kept.txt
    # keep the images where the MTCNN detector finds a face with p >= 0.9
    python tools/dataset_converters/filter_dataset.py CONFIG --min-face-score 0.9 \
        --out data/faces/kept.txt
    # then: dict(type='OcclusionMaskDataset', data_root='data/niqab',
    #            ann_file='kept.txt', ...)
"""
import argparse
import sys

from oaml_mm.utils import CfgOptionsAction


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('--out', required=True, help='list file to write')
    p.add_argument('--split', default='train', choices=('train', 'val', 'test'))
    p.add_argument('--part', type=int, default=None,
                   help='only this part of a ConcatDataset')
    p.add_argument('--min-visibility', type=float, default=0.0)
    p.add_argument('--min-sharpness', type=float, default=0.0,
                   help='variance of the Laplacian of the grey image')
    p.add_argument('--min-brightness', type=float, default=0.0)
    p.add_argument('--max-brightness', type=float, default=255.0)
    p.add_argument('--min-face-score', type=float, default=0.0,
                   help='smallest face probability of the FaceDetector (MTCNN) '
                   'on the image; runs the detector on every sample')
    p.add_argument('--stats', help='also write every sample\'s measurements (TSV)')
    p.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                   help='override config keys, key=value; data_root=DIR (and '
                   'val_/test_/occlusion_data_root) moves a data set '
                   '(docs/data_layout.md)')
    args = p.parse_args(argv)

    from oaml_mm.datasets.curation import (build_split_dataset, sample_stats,
                                           write_filtered_list)
    from oaml_mm.errors import OAMLError
    from oaml_mm.utils.config import load_config
    try:
        cfg = load_config(args.config, args.cfg_options)
        ds = build_split_dataset(cfg, args.split, args.part)
        detector = None
        if args.min_face_score > 0:
            from oaml_mm.models.detectors import FaceDetector

            # Aligned crops hold one large face: a small minimum size is enough.
            detector = FaceDetector(min_face_size=20)
        stats = sample_stats(ds, detector=detector)
        counts = write_filtered_list(
            ds, args.out, stats, args.min_visibility, args.min_sharpness,
            args.min_brightness, args.max_brightness, args.min_face_score)
    except OAMLError as e:
        print(f'filter_dataset: {e}', file=sys.stderr)
        return 2
    if args.stats:
        cols = ['index', 'key', 'label', 'visibility', 'sharpness', 'brightness',
                'contrast'] + (['face_score'] if detector is not None else [])
        with open(args.stats, 'w') as f:
            f.write('\t'.join(cols) + '\n')
            for st in stats:
                f.write('\t'.join(str(st[c]) for c in cols) + '\n')
    print(f'{counts} -> {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
