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

import numpy as np
import torch
import torch.nn as nn

import oaml_mm  # noqa: F401
from oaml_mm.apis.onnx_backend import OUTPUT_NAMES, ExportWrapper, export_onnx
from oaml_mm.errors import OAMLError


def export(model: nn.Module, out_file: str, input_size: int = 112,
           opset: int = 17) -> None:
    """Write ``model`` as ONNX with a dynamic batch axis (atomically): see
    :func:`oaml_mm.apis.onnx_backend.export_onnx`."""
    export_onnx(model, out_file, input_size, opset)


def check(model: nn.Module, onnx_file: str, input_size: int = 112,
          batch_sizes=(1, 5), seed: int = 0) -> float:
    """Largest absolute difference between onnxruntime and PyTorch outputs.

    Args:
        model (OAMLRecognizer): The PyTorch model (eval mode).
        onnx_file (str): The exported file.
        input_size (int): Side of the input crops.
        batch_sizes (Sequence[int]): Batches to try (two sizes exercise the
            dynamic axis).
        seed (int): Seed of the random inputs.

    Returns:
        float: Max over batches and outputs of ``|onnx - torch|``.
    """
    import onnxruntime as ort
    sess = ort.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    wrapper = ExportWrapper(model).eval()
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for bs in batch_sizes:
        x = torch.randint(0, 256, (bs, 3, input_size, input_size),
                          generator=gen).float()
        with torch.no_grad():
            ref = wrapper(x)
        got = sess.run(list(OUTPUT_NAMES), {'images': x.numpy()})
        for name, r, g in zip(OUTPUT_NAMES, ref, got):
            if tuple(g.shape) != tuple(r.shape):
                raise RuntimeError(f'{name}: onnx shape {g.shape} vs torch '
                                   f'{tuple(r.shape)} at batch {bs}')
            worst = max(worst, float(np.abs(g - r.numpy()).max()))
    return worst


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
    export(model, args.out, rec.input_size, args.opset)
    diff = check(model, args.out, rec.input_size)
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
