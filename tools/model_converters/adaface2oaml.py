"""Convert an AdaFace checkpoint (PyTorch Lightning ``.ckpt``) to an oaml_mm one.

Usage::

    python tools/model_converters/adaface2oaml.py adaface_ir50_ms1mv2.ckpt \
        checkpoints/adaface_ir50_ms1mv2_oaml.pth [--backbone-only]

The output is ``{'state_dict': {'backbone.*', 'head.kernel', 'head.batch_mean',
'head.batch_std'}, 'meta': {...}}``, loadable with ``load_from`` or
``tools/test.py`` and with ``torch.load(weights_only=True)``. ``meta`` records the
backbone config the weights need and that they expect BGR input
(``FaceDataPreprocessor(channel_order='bgr')``). The source is read with the
weights-only unpickler; a Lightning file that also stores Python objects is refused
with instructions to re-save its weights.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

from oaml_mm.errors import CheckpointError
from oaml_mm.models.utils import adaface_to_oaml, load_foreign_checkpoint
from oaml_mm.utils import atomic_save


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert an AdaFace checkpoint to oaml_mm keys')
    parser.add_argument('src', help='AdaFace .ckpt (or its state_dict .pth)')
    parser.add_argument('dst', help='output .pth')
    parser.add_argument(
        '--backbone-only', action='store_true',
        help='drop the AdaFace head (for training on other identities)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        state = load_foreign_checkpoint(args.src)
        converted, meta = adaface_to_oaml(state, args.src,
                                          with_head=not args.backbone_only)
    except CheckpointError as e:
        print(f'adaface2oaml: {e}', file=sys.stderr)
        return 1
    meta.update(source=osp.basename(args.src), converter='adaface2oaml')
    atomic_save(dict(state_dict=converted, meta=meta), args.dst)
    print(f'wrote {args.dst}: {len(converted)} tensors; backbone '
          f"{meta['backbone']}; input channel order BGR")
    return 0


if __name__ == '__main__':
    sys.exit(main())
