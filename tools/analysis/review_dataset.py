"""Review list of near-duplicate images and likely mislabelled samples.

Embeds every sample of a configured data set with CONFIG's model and CHECKPOINT and
writes a TSV (kind, score, a, b, label_a, label_b), most suspicious first
(:func:`oaml_mm.datasets.curation.review_pairs`, exact search with faiss).

Examples:
    python tools/analysis/review_dataset.py CONFIG CHECKPOINT --part 0 \
        --out review.tsv --duplicate-cos 0.95
"""
import argparse
import sys

from oaml_mm.utils import CfgOptionsAction


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--out', default='review.tsv')
    p.add_argument('--split', default='train', choices=('train', 'val', 'test'))
    p.add_argument('--part', type=int, default=None,
                   help='only this part of a ConcatDataset')
    p.add_argument('--duplicate-cos', type=float, default=0.95)
    p.add_argument('--mislabel-margin', type=float, default=0.0)
    p.add_argument('--max-images', type=int, default=None)
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                   help='override config keys, key=value; data_root=DIR (and '
                   'val_/test_/occlusion_data_root) moves a data set '
                   '(docs/data_layout.md)')
    args = p.parse_args(argv)

    from oaml_mm.apis import FaceRecognizer
    from oaml_mm.datasets.curation import (build_split_dataset, embed_dataset,
                                           review_pairs, write_review_list)
    from oaml_mm.errors import OAMLError
    from oaml_mm.utils.config import load_config
    try:
        cfg = load_config(args.config, args.cfg_options)
        model = FaceRecognizer(cfg, args.checkpoint).model.eval()
        ds = build_split_dataset(cfg, args.split, args.part)
        embs, keys, labels = embed_dataset(model, ds, args.batch_size,
                                           args.max_images)
        rows = review_pairs(embs, labels, keys, args.duplicate_cos,
                            mislabel_margin=args.mislabel_margin)
    except OAMLError as e:
        print(f'review_dataset: {e}', file=sys.stderr)
        return 2
    write_review_list(rows, args.out)
    print(f'{sum(r["kind"] == "duplicate" for r in rows)} near-duplicate pairs, '
          f'{sum(r["kind"] == "mislabel" for r in rows)} mislabel candidates '
          f'among {len(keys)} images -> {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
