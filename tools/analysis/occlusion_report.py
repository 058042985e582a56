"""Occlusion report of a checkpoint: picture sheets, error and QAConv accuracy per type.

Evaluates CONFIG's model with CHECKPOINT through ``VerificationMetric``'s visibility
ablation (the test metric's own predictions, QAConv scores with predicted, true and no
visibility, and visibility error) over a verification set with true visibility maps
and occlusion types (by default the config's ``test_dataloader`` data set, e.g. the
SynthFace ``.bin`` files with their side files) and writes ``OUT/report.md`` with
``sheet_<type>.png`` and ``visibility_hist.png`` beside it
(:mod:`oaml_mm.visualization.occlusion_report`).

Examples:
    python tools/analysis/occlusion_report.py \
        configs/synthface/oaml_ir18_synthface.py \
        work_dirs/oaml_ir18_synthface/iter_500.pth --out work_dirs/occ_report
"""
import argparse
import sys

from oaml_mm.utils import CfgOptionsAction


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--out', default='occlusion_report', help='output folder')
    p.add_argument('--split', default='test', choices=('test', 'val'),
                   help='which dataloader\'s data set to read (default test)')
    p.add_argument('--max-images', type=int, default=None,
                   help='only N images: whole pairs drawn from every '
                   'occlusion type and set in turn')
    p.add_argument('--per-type', type=int, default=6,
                   help='images per picture sheet (default %(default)s)')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                   help='override config keys, key=value; data_root=DIR (and '
                   'val_/test_/occlusion_data_root) moves a data set '
                   '(docs/data_layout.md)')
    args = p.parse_args(argv)

    from oaml_mm.apis import FaceRecognizer
    from oaml_mm.datasets.curation import build_split_dataset
    from oaml_mm.errors import OAMLError
    from oaml_mm.utils.config import load_config
    from oaml_mm.visualization.occlusion_report import (collect_predictions,
                                                        occlusion_tables,
                                                        write_occlusion_report)
    try:
        cfg = load_config(args.config, args.cfg_options)
        model = FaceRecognizer(cfg, args.checkpoint).model
        dataset = build_split_dataset(cfg, args.split)  # test-time pipeline
        # One pass through the test metric's visibility ablation: the
        # report's numbers are the metric's.
        rec = collect_predictions(model, dataset, args.batch_size,
                                  args.max_images, args.per_type)
        tables = occlusion_tables(rec)
        path = write_occlusion_report(args.out, rec, tables, args.per_type,
                                      title=f'Occlusion report: {args.checkpoint}')
    except OAMLError as e:
        print(f'occlusion_report: {e}', file=sys.stderr)
        return 2
    print(f'report written to {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
