"""Export the OAML backbone + occlusion head to ONNX and check it with onnxruntime.

    python tools/deployment/export_onnx.py CONFIG CHECKPOINT OUT.onnx [--opset 17]

The graph takes ``images``: float32 [B, 3, S, S], **RGB, pixel values 0..255** (the
model's channel order and mean/std are inside the graph), with a dynamic batch axis,
and returns ``embedding`` [B, D] (unit), ``norm`` [B, 1], ``feature_map``
[B, C, h, w] (L2-normalised over channels, QAConv's input) and ``visibility``
[B, 1, h, w]. It is the unflipped single pass (no flip test). After writing, the tool
runs the file with onnxruntime on random faces at two batch sizes, compares every
output with PyTorch and prints the largest absolute difference; it exits 1 when that
exceeds ``--tol``. QAConv matching itself stays in PyTorch/numpy (it is a few matrix
products on the exported maps).
"""
import argparse
import sys

import oaml_mm  # noqa: F401
from oaml_mm.apis.onnx_backend import (OUTPUT_NAMES, export_onnx,
                                       onnx_max_difference)
from oaml_mm.errors import OAMLError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('out')
    p.add_argument('--opset', type=int, default=17)
    p.add_argument('--tol', type=float, default=1e-3,
                   help='largest accepted |onnx - torch| (default 1e-3)')
    args = p.parse_args(argv)
    from oaml_mm.apis import FaceRecognizer
    from oaml_mm.utils import check_output_file
    try:
        check_output_file(args.out, 'out')  # before loading and tracing
        rec = FaceRecognizer(args.config, args.checkpoint)
    except OAMLError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    model = rec.model.eval()
    export_onnx(model, args.out, rec.input_size, args.opset)
    diff = onnx_max_difference(model, args.out, rec.input_size)
    print(f'wrote {args.out} (inputs: images [batch, 3, {rec.input_size}, '
          f'{rec.input_size}] RGB 0..255; outputs: {", ".join(OUTPUT_NAMES)})')
    print(f'largest |onnxruntime - pytorch| difference: {diff:.3g}')
    if 'neck' in rec.absent_parts:
        # Loaded without its occlusion head (logged at load time): say so where
        # the export is reported, since the graph's visibility is then constant.
        print(f'warning: {args.checkpoint} has no occlusion head: the exported '
              "'visibility' output is all ones (every cell visible)")
    if diff > args.tol:
        print(f'error: difference above --tol {args.tol}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
