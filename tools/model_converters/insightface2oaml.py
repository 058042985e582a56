"""Convert an insightface ``iresnet`` backbone (``.pth``) to an oaml_mm checkpoint.

Usage::

    python tools/model_converters/insightface2oaml.py backbone.pth \
        checkpoints/insightface_r50_oaml.pth

The mapping is exact (see :mod:`oaml_mm.models.utils.checkpoint_convert`); the model
that loads the result needs ``IResNet(..., conv_shortcut_on_stride=True,
embedding_bn_affine=True)`` (insightface's ``layer1.0`` conv shortcut and affine
``features`` BN) and ``FaceDataPreprocessor(channel_order='rgb')``; both are recorded
in the output's ``meta``. Only the backbone is converted (insightface keeps its
classifier in a separate partial-FC file).
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

from oaml_mm.errors import CheckpointError
from oaml_mm.models.utils import insightface_to_oaml, load_foreign_checkpoint
from oaml_mm.utils import atomic_save


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert an insightface iresnet backbone to oaml_mm keys')
    parser.add_argument('src', help='insightface backbone .pth')
    parser.add_argument('dst', help='output .pth')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        state = load_foreign_checkpoint(args.src)
        converted, meta = insightface_to_oaml(state, args.src)
    except CheckpointError as e:
        print(f'insightface2oaml: {e}', file=sys.stderr)
        return 1
    meta.update(source=osp.basename(args.src), converter='insightface2oaml')
    atomic_save(dict(state_dict=converted, meta=meta), args.dst)
    print(f'wrote {args.dst}: {len(converted)} tensors; backbone '
          f"{meta['backbone']}; input channel order RGB")
    return 0


if __name__ == '__main__':
    sys.exit(main())
