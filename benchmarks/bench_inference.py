"""Inference benchmark: ``extract`` images/s at batch 1 and 64, PyTorch vs ONNX Runtime.

Times, in one process and in alternation, the single unflipped pass that inference
and evaluation run per image (preprocessing, backbone, occlusion head, L2-normalised
feature maps: ``OAMLRecognizer.extract`` behind the export wrapper of
``tools/deployment/export_onnx.py``) in PyTorch eager mode, against the same model
exported with that tool and run by onnxruntime with the same number of threads.
The ONNX outputs are also compared with PyTorch's (max |difference| in the note).
The ``extract_folded_cl`` rows time the path ``FaceRecognizer.extract`` takes on a CPU
(:func:`oaml_mm.models.utils.inference_model`: BatchNorms folded into the
convolutions, channels-last) against the same onnxruntime session.

Usage:
    python benchmarks/bench_inference.py --help
    python benchmarks/bench_inference.py --quick --threads 1      # IR-18 width 0.5
    python benchmarks/bench_inference.py --depth 50 --width 1.0    # the IR-50 model
    python benchmarks/bench_inference.py --device cuda             # PyTorch fp16 only
"""
import argparse
import os.path as osp
import tempfile
from typing import List, Optional

import torch

from oaml_mm.apis.onnx_backend import (ExportWrapper, export_onnx,
                                       onnx_max_difference)

try:
    from benchmarks.common import (add_common_args, make_row, print_rows,
                                   setup_threads, time_interleaved)
except ImportError:  # run as a script
    from common import (add_common_args, make_row, print_rows, setup_threads,
                        time_interleaved)


def build_model(depth: int, width: float):
    """An eval-mode OAML recognizer (random weights: speed does not depend on them)."""
    import oaml_mm  # noqa: F401
    from oaml_mm.registry import MODELS
    c = int(512 * width)
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='OAMLRecognizer',
        backbone=dict(type='IResNet', depth=depth, width_mult=width),
        neck=dict(type='OcclusionHead', in_channels=c),
        head=dict(type='AdaFaceHead', in_channels=512, num_classes=16),
        qaconv_head=dict(type='QAConvHead', in_channels=c))).eval()


def run(quick: bool = False, device: str = 'cpu', depth: Optional[int] = None,
        width: Optional[float] = None, repeats: Optional[int] = None,
        batch_sizes=(1, 64)) -> List[dict]:
    """Run the benchmark.

    Args:
        quick (bool): IR-18 width 0.5 and 3 repeats (else IR-50 width 1.0, 5).
        device (str): ``'cpu'``; on ``'cuda'`` PyTorch runs fp16 autocast and the
            ONNX comparison is skipped (onnxruntime here is the CPU build).
        depth (int, optional): IResNet depth.
        width (float, optional): IResNet width multiplier.
        repeats (int, optional): Timed repeats (median).
        batch_sizes (tuple): Batches to time.

    Returns:
        list[dict]: Result rows.
    """
    depth = depth or (18 if quick else 50)
    width = width or (0.5 if quick else 1.0)
    repeats = repeats or (3 if quick else 5)
    dev = torch.device(device)
    model = build_model(depth, width)
    wrapper = ExportWrapper(model).eval()
    rows = []
    tag = f'IR-{depth} width {width}'
    sess, diff, tmp = None, None, None
    if dev.type == 'cpu':
        import onnxruntime as ort
        tmp = tempfile.TemporaryDirectory()
        path = osp.join(tmp.name, 'model.onnx')
        export_onnx(model, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, opts,
                                    providers=['CPUExecutionProvider'])
        diff = onnx_max_difference(model, path, batch_sizes=(2, ))
    wrapper = wrapper.to(dev)
    fast = None
    if dev.type == 'cpu':
        # FaceRecognizer.extract's path: BatchNorms folded, channels-last.
        from oaml_mm.models.utils import inference_model
        fast = ExportWrapper(inference_model(model)).eval()
    fast_rows = []
    for bs in batch_sizes:
        g = torch.Generator().manual_seed(bs)
        x = torch.randint(0, 256, (bs, 3, 112, 112), generator=g).float()
        xd = x.to(dev)
        x_np = x.numpy()

        def torch_fn():
            with torch.no_grad(), torch.autocast(
                    dev.type, torch.float16, enabled=dev.type == 'cuda'):
                return wrapper(xd)

        fns = dict(torch=torch_fn)
        fast_diff = None
        if fast is not None:
            fns['fast'] = lambda: fast(xd)
            with torch.no_grad():
                fast_diff = max(float((a - b).abs().max()) for a, b in zip(
                    fast(xd), wrapper(xd)))
        if sess is not None:
            fns['onnx'] = lambda: sess.run(None, {'images': x_np})
        # Batch 1 is short: several calls per timed unit keep the clock honest.
        calls = max(1, 16 // bs)
        timed = {k: (lambda f=f: [f() for _ in range(calls)])
                 for k, f in fns.items()}
        with torch.no_grad():
            t = time_interleaved(timed, repeats, dev)
        rate = bs * calls / t['torch']
        note = f"{tag}, {torch.get_num_threads()} thread(s)"
        if 'onnx' in t:
            if diff is not None:
                note += f', max |onnx - torch| {diff:.2g}'
            rows.append(make_row(f'inference/extract bs={bs}', rate, 'images/s',
                                 'onnxruntime, same graph and threads',
                                 bs * calls / t['onnx'], note=note))
            if 'fast' in t:
                fast_rows.append(make_row(
                    f'inference/extract_folded_cl bs={bs}',
                    bs * calls / t['fast'], 'images/s',
                    'onnxruntime, same graph and threads',
                    bs * calls / t['onnx'], aim='>= 1x onnxruntime',
                    met=t['onnx'] / t['fast'] >= 1.0,
                    note=note + ', BatchNorm folded + channels-last (the '
                    f'FaceRecognizer path), max |fast - eager| {fast_diff:.2g}'))
        else:
            rows.append(make_row(f'inference/extract bs={bs}', rate, 'images/s',
                                 note=note + ', fp16 autocast'))
    if tmp is not None:
        tmp.cleanup()
    if len(rows) == 2:
        rows.append(make_row(
            'inference/batching_gain', rows[1]['value'], 'images/s',
            f'extract bs={batch_sizes[0]}', rows[0]['value'],
            note='images/s at the large batch over batch 1 (PyTorch)'))
    if len(fast_rows) == 2:
        fast_rows.append(make_row(
            'inference/batching_gain_folded_cl', fast_rows[1]['value'],
            'images/s', f'extract_folded_cl bs={batch_sizes[0]}',
            fast_rows[0]['value'], aim='> 1', met=fast_rows[1]['value'] >
            fast_rows[0]['value'],
            note='images/s at the large batch over batch 1 (folded, '
            'channels-last)'))
    return rows + fast_rows


def main(argv=None) -> List[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.split('\n')[1:]))
    add_common_args(parser)
    parser.add_argument('--depth', type=int, default=None,
                        help='IResNet depth (50; 18 with --quick)')
    parser.add_argument('--width', type=float, default=None,
                        help='width multiplier (1.0; 0.5 with --quick)')
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    rows = run(args.quick, args.device, args.depth, args.width, args.repeats)
    print_rows(rows)
    return rows


if __name__ == '__main__':
    main()
