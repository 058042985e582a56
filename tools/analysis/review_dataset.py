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

from mmengine.config import DictAction


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
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config keys, key=value; data_root=DIR (and '
                   'val_/test_/occlusion_data_root) moves a data set '
                   '(docs/data_layout.md)')
    args = p.parse_args(argv)

    import numpy as np
    import torch
    from mmengine.dataset import pseudo_collate
    from torch.utils.data import DataLoader, Subset

    from oaml_mm.apis import FaceRecognizer
    from oaml_mm.datasets.curation import build_split_dataset, review_pairs
    from oaml_mm.errors import OAMLError
    from oaml_mm.utils.config import load_config
    try:
        cfg = load_config(args.config, args.cfg_options)
        model = FaceRecognizer(cfg, args.checkpoint).model.eval()
        ds = build_split_dataset(cfg, args.split, args.part)
        n = len(ds) if args.max_images is None else min(len(ds), args.max_images)
        labels = np.asarray(ds.get_gt_labels())[:n]
        embs, keys = [], []
        loader = DataLoader(Subset(ds, range(n)), batch_size=args.batch_size,
                            collate_fn=pseudo_collate)
        with torch.no_grad():
            for data in loader:
                keys += [str(s.get('key')) for s in data['data_samples']]
                batch = model.data_preprocessor(data, False)
                embs.append(model.extract(batch['inputs'])['embedding'].float())
        rows = review_pairs(torch.cat(embs).numpy(), labels, keys,
                            args.duplicate_cos, mislabel_margin=args.mislabel_margin)
    except OAMLError as e:
        print(f'review_dataset: {e}', file=sys.stderr)
        return 2
    cols = ['kind', 'score', 'a', 'b', 'label_a', 'label_b']
    with open(args.out, 'w') as f:
        f.write('\t'.join(cols) + '\n')
        for r in rows:
            f.write('\t'.join(str(r[c]) for c in cols) + '\n')
    print(f'{sum(r["kind"] == "duplicate" for r in rows)} near-duplicate pairs, '
          f'{sum(r["kind"] == "mislabel" for r in rows)} mislabel candidates '
          f'among {n} images -> {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
