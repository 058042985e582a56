"""The model's extraction graph in ONNX, and onnxruntime as an inference backend.

:func:`export_onnx` writes preprocessing + backbone + occlusion head as one graph:
``images`` float32 [B, 3, S, S], RGB, pixel values 0..255, in; ``embedding`` [B, D]
(unit), ``norm`` [B, 1], ``feature_map`` [B, C, h, w] (L2-normalised over channels)
and ``visibility`` [B, 1, h, w] out, with a dynamic batch axis. It is the unflipped
single pass; :class:`OnnxRuntimeExtractor` runs it and applies the flip test the way
``OAMLRecognizer.extract`` does, so ``FaceRecognizer(..., backend='onnxruntime')``
returns the PyTorch path's features (docs/inference.md, "ONNX export").
"""
import copy
import io
import os
import os.path as osp
import tempfile
from typing import Dict, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from oaml_mm.errors import ConfigError

__all__ = ['OUTPUT_NAMES', 'ExportWrapper', 'export_onnx', 'onnx_max_difference',
           'OnnxRuntimeExtractor']

OUTPUT_NAMES = ('embedding', 'norm', 'feature_map', 'visibility')


class ExportWrapper(nn.Module):
    """Preprocessing + backbone + occlusion head of an OAMLRecognizer, tensors only.

    Args:
        model (OAMLRecognizer): The loaded model (eval mode).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        x = self.model.data_preprocessor.normalize(images)
        out = self.model.extract(x, flip_test=False, return_feature_maps=True,
                                 half_maps=False)
        return tuple(out[k] for k in OUTPUT_NAMES)


def export_onnx(model: nn.Module, out: Union[str, io.BytesIO],
                input_size: int = 112, opset: int = 17) -> None:
    """Write the extraction graph of ``model`` as ONNX (a file atomically, or a buffer).

    The model is not modified (a copy is exported).

    Args:
        model (OAMLRecognizer): The model, in eval mode on the CPU.
        out (str | io.BytesIO): Destination ``.onnx`` path or an in-memory buffer.
        input_size (int): Side of the input crops.
        opset (int): ONNX opset.
    """
    model = copy.deepcopy(model).cpu().eval()
    # Channels-last runs add layout ops the exporter does not need.
    if getattr(model.backbone, 'channels_last', False):
        model.backbone.channels_last = False
    wrapper = ExportWrapper(model).eval()
    dummy = torch.randint(0, 256, (2, 3, input_size, input_size)).float()

    def _export(f) -> None:
        with torch.no_grad():
            torch.onnx.export(
                wrapper, (dummy, ), f, input_names=['images'],
                output_names=list(OUTPUT_NAMES), opset_version=opset,
                dynamic_axes={n: {0: 'batch'}
                              for n in ('images', ) + OUTPUT_NAMES},
                dynamo=False)

    if not isinstance(out, (str, os.PathLike)):
        _export(out)
        return
    folder = osp.dirname(osp.abspath(out))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix='.onnx.tmp', dir=folder)
    os.close(fd)
    try:
        _export(tmp)
        umask = os.umask(0)
        os.umask(umask)
        # mkstemp creates 0600 files; give the export the usual permissions.
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def onnx_max_difference(model: nn.Module, onnx_file: str, input_size: int = 112,
                        batch_sizes: Sequence[int] = (1, 5),
                        seed: int = 0) -> float:
    """Largest absolute difference between onnxruntime and PyTorch outputs.

    Runs the exported file (:func:`export_onnx`) and :class:`ExportWrapper` on
    the same random faces (pixel values 0..255) at each batch size and compares
    every output of :data:`OUTPUT_NAMES`.

    Args:
        model (OAMLRecognizer): The PyTorch model (eval mode).
        onnx_file (str): The exported file.
        input_size (int): Side of the input crops.
        batch_sizes (Sequence[int]): Batches to try (two sizes exercise the
            dynamic axis).
        seed (int): Seed of the random inputs.

    Returns:
        float: Max over batches and outputs of ``|onnx - torch|``.

    Raises:
        RuntimeError: An output's shape differs between the two (named, with
            the batch size).
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


class OnnxRuntimeExtractor:
    """Extract features with onnxruntime from a model's exported graph.

    Args:
        model (OAMLRecognizer): The model to export (its ``test_cfg.flip_test``
            is honoured).
        input_size (int): Side of the input crops. Defaults to 112.
        threads (int, optional): onnxruntime intra-op threads; None uses
            ``torch.get_num_threads()``.

    Raises:
        ConfigError: onnxruntime (or onnx) is not installed.
    """

    def __init__(self, model: nn.Module, input_size: int = 112,
                 threads: int = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ConfigError(
                f'backend="onnxruntime" needs onnxruntime and onnx ({e}); '
                'pip install onnxruntime onnx, or use backend="pytorch"') from e
        buf = io.BytesIO()
        export_onnx(model, buf, input_size)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        self.session = ort.InferenceSession(
            buf.getvalue(), opts, providers=['CPUExecutionProvider'])
        self.flip_test = bool(model.test_cfg.get('flip_test', False))

    def _run(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        return dict(zip(OUTPUT_NAMES,
                        self.session.run(list(OUTPUT_NAMES),
                                         {'images': images})))

    def __call__(self, crops: torch.Tensor,
                 return_feature_maps: bool = False) -> Dict[str, torch.Tensor]:
        """Features of RGB uint8 crops [B, 3, S, S], as ``FaceRecognizer.extract``.

        Returns:
            dict: float32 CPU tensors ``embedding``, ``norm``, ``visibility`` and,
            with ``return_feature_maps``, ``feature_map``.
        """
        x = crops.float().numpy()
        out = self._run(x)
        emb, norm = out['embedding'], out['norm']
        if self.flip_test:
            # The flip test of OAMLRecognizer.extract: norm-weighted sum.
            flip = self._run(np.ascontiguousarray(x[..., ::-1]))
            raw = emb * norm + flip['embedding'] * flip['norm']
            norm = np.linalg.norm(raw, axis=1, keepdims=True)
            emb = raw / np.maximum(norm, 1e-12)
        res = dict(embedding=emb, norm=norm, visibility=out['visibility'])
        if return_feature_maps:
            res['feature_map'] = out['feature_map']
        return {k: torch.from_numpy(np.ascontiguousarray(v)).float()
                for k, v in res.items()}
