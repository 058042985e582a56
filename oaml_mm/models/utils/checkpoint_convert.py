"""Key mappings from released face-recognition checkpoints to oaml_mm's model.

* AdaFace (Kim et al., CVPR 2022; PyTorch Lightning ``.ckpt``): the backbone is stored
  under ``model.`` with the key names :class:`~oaml_mm.models.IResNet` uses, the head
  under ``head.`` (``kernel`` [512, C], ``batch_mean``, ``batch_std`` and an unused
  ``t`` buffer). Conversion is a prefix change.
* insightface ``iresnet`` (arcface_torch): other names, and two layout differences
  that the backbone options ``conv_shortcut_on_stride=True`` and
  ``embedding_bn_affine=True`` reproduce exactly:

  ================================  ========================================
  insightface                       oaml_mm (AdaFace names)
  ================================  ========================================
  ``conv1`` / ``bn1`` / ``prelu``   ``input_layer.0`` / ``.1`` / ``.2``
  ``layer{L}.{j}.bn1``              ``body.{k}.res_layer.0``
  ``layer{L}.{j}.conv1``            ``body.{k}.res_layer.1``
  ``layer{L}.{j}.bn2``              ``body.{k}.res_layer.2``
  ``layer{L}.{j}.prelu``            ``body.{k}.res_layer.3``
  ``layer{L}.{j}.conv2``            ``body.{k}.res_layer.4``
  ``layer{L}.{j}.bn3``              ``body.{k}.res_layer.5``
  ``layer{L}.{j}.downsample.0/1``   ``body.{k}.shortcut_layer.0/1``
  ``bn2``                           ``output_layer.0``
  ``fc``                            ``output_layer.3``
  ``features`` (affine BN1d)        ``output_layer.4`` (affine)
  ================================  ========================================

  with ``k`` = units of the earlier stages + ``j``. insightface builds a conv
  shortcut in ``layer1.0`` (stride 2, width unchanged) where AdaFace pools.

Every mapping refuses a state dict it cannot map completely, listing the keys.
"""
import re
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch

from oaml_mm.errors import CheckpointError, UnsafeCheckpointError
from oaml_mm.utils import safe_load_checkpoint
from oaml_mm.utils.checkpoint import fill_batchnorm_counters
from ..backbones.iresnet import IRESNET_ARCHS, IResNet

__all__ = [
    'load_foreign_checkpoint', 'adaface_to_oaml', 'insightface_to_oaml',
    'oaml_to_insightface', 'infer_iresnet_config'
]

_ADAFACE_HEAD_KEYS = ('kernel', 'batch_mean', 'batch_std')
# AdaFace's head registers a buffer ``t`` that its forward never reads.
_ADAFACE_IGNORED = ('head.t', )


def _fail(src: str, what: str, keys: List[str], limit: int = 20) -> None:
    shown = ', '.join(keys[:limit]) + (
        f' ... ({len(keys) - limit} more)' if len(keys) > limit else '')
    raise CheckpointError(f'{src}: {what}: {shown}')


def load_foreign_checkpoint(src: str) -> Dict[str, torch.Tensor]:
    """Read a released checkpoint's state dict with the weights-only unpickler.

    Args:
        src (str): A ``.ckpt``/``.pth`` holding a state dict, or a dict with a
            ``state_dict`` entry (Lightning, mmengine).

    Returns:
        dict: The flat state dict (tensors only).

    Raises:
        CheckpointError: The file cannot be read, holds non-weight objects (the
            message says how to re-save it) or holds no state dict.
    """
    try:
        ckpt = safe_load_checkpoint(src, decode=False)
    except UnsafeCheckpointError as e:
        raise CheckpointError(
            f'{src}: holds Python objects besides the weights (PyTorch Lightning '
            'stores hyper-parameters and callbacks), so it is not unpickled here: '
            'that could run arbitrary code. If you trust the file, re-save its '
            'weights once where it was made (with PyTorch Lightning installed, '
            "load it there and run torch.save(ckpt['state_dict'], "
            "'SRC.weights.pth')) and convert that file instead.\n"
            f'Detail: {e}') from None
    if isinstance(ckpt, dict) and isinstance(ckpt.get('state_dict'), dict):
        ckpt = ckpt['state_dict']
    if not isinstance(ckpt, dict) or not ckpt or not all(
            isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise CheckpointError(
            f'{src}: expected a state dict (name -> tensor) or a dict with a '
            "'state_dict' entry")
    return dict(ckpt)


def infer_iresnet_config(backbone: Dict[str, torch.Tensor],
                         src: str = '<state_dict>', **options) -> dict:
    """IResNet config (depth, SE, width, embedding size) that fits a state dict.

    Args:
        backbone (dict): Backbone state dict in oaml_mm/AdaFace names.
        src (str): File name for messages.
        **options: Extra IResNet arguments to include.

    Returns:
        dict: ``dict(type='IResNet', depth=..., use_se=..., width_mult=...,
        embedding_size=..., **options)``.
    """
    try:
        stem = backbone['input_layer.0.weight'].shape[0]
        embedding = backbone['output_layer.3.weight'].shape[0]
        fc_in = backbone['output_layer.3.weight'].shape[1]
    except KeyError as e:
        raise CheckpointError(
            f'{src}: not an IR backbone: {e.args[0]} is missing') from None
    units = {int(m.group(1)) for k in backbone
             for m in [re.match(r'body\.(\d+)\.', k)] if m}
    n_units = len(units)
    depths = [d for d, (_, u, _) in IRESNET_ARCHS.items()
              if sum(u) == n_units and d != 101]
    if len(depths) != 1:
        raise CheckpointError(
            f'{src}: {n_units} residual units match no IResNet depth '
            f'({ {d: sum(u) for d, (_, u, _) in IRESNET_ARCHS.items()} })')
    use_se = any('.fc1.weight' in k for k in backbone)
    last = IRESNET_ARCHS[depths[0]][2][-1]
    width_mult = stem / 64.0
    out_ch = backbone['output_layer.0.weight'].shape[0]
    if round(last * width_mult) != out_ch:
        raise CheckpointError(
            f'{src}: stem width {stem} and output width {out_ch} do not fit one '
            'width multiplier')
    side = int(round((fc_in / out_ch)**0.5))
    return dict(type='IResNet', depth=depths[0], use_se=use_se,
                width_mult=width_mult, embedding_size=embedding,
                input_size=side * 16, **options)


def _check_loads(backbone: Dict[str, torch.Tensor], cfg: dict,
                 src: str) -> Dict[str, torch.Tensor]:
    """Build the backbone and load strictly: every key must map, none be missing.

    BatchNorm ``num_batches_tracked`` counters that the file lacks (saved before
    torch 0.4.1, or converted from MXNet) are added as 0
    (:func:`~oaml_mm.utils.checkpoint.fill_batchnorm_counters`).

    Returns:
        dict: ``backbone`` with the missing counters added.
    """
    args = {k: v for k, v in cfg.items() if k != 'type'}
    model = IResNet(**args)
    backbone = fill_batchnorm_counters(backbone, model.state_dict())
    result = model.load_state_dict(backbone, strict=False)
    problems = [f'unexpected {k}' for k in result.unexpected_keys] + \
        [f'missing {k}' for k in result.missing_keys]
    if problems:
        _fail(src, f'does not fit {cfg}', problems)
    for k, v in model.state_dict().items():
        if v.shape != backbone[k].shape:
            _fail(src, 'shape mismatch', [f'{k} {tuple(backbone[k].shape)}'])
    return backbone


def adaface_to_oaml(state: Dict[str, torch.Tensor],
                    src: str = '<state_dict>',
                    with_head: bool = True) -> Tuple[OrderedDict, dict]:
    """Map an AdaFace state dict (``model.*``, ``head.*``) to OAMLRecognizer keys.

    Args:
        state (dict): AdaFace Lightning ``state_dict``.
        src (str): File name for messages.
        with_head (bool): Keep the AdaFace head (kernel and norm statistics).

    Returns:
        tuple[OrderedDict, dict]: ``backbone.*`` / ``head.*`` state dict, and the
        model settings it needs (backbone config, num_classes, channel order).
    """
    out, backbone, unmatched = OrderedDict(), OrderedDict(), []
    for key, value in state.items():
        if key.startswith('model.'):
            backbone[key[len('model.'):]] = value
        elif key.startswith('head.') and key[5:] in _ADAFACE_HEAD_KEYS:
            if with_head:
                out[key] = value
        elif key not in _ADAFACE_IGNORED:
            unmatched.append(key)
    if unmatched:
        _fail(src, 'keys with no place in the OAML model', unmatched)
    if not backbone:
        raise CheckpointError(f"{src}: no 'model.*' backbone keys; is this an "
                              'AdaFace checkpoint?')
    cfg = infer_iresnet_config(backbone, src)
    backbone = _check_loads(backbone, cfg, src)
    meta = dict(backbone=cfg, channel_order='bgr')
    if with_head:
        if 'head.kernel' not in out:
            raise CheckpointError(f'{src}: head.kernel is missing')
        meta['num_classes'] = int(out['head.kernel'].shape[1])
    for key, value in backbone.items():
        out[f'backbone.{key}'] = value
    return out, meta


_INSIGHT_UNIT = {
    'bn1': 'res_layer.0', 'conv1': 'res_layer.1', 'bn2': 'res_layer.2',
    'prelu': 'res_layer.3', 'conv2': 'res_layer.4', 'bn3': 'res_layer.5',
    'downsample.0': 'shortcut_layer.0', 'downsample.1': 'shortcut_layer.1'
}
_INSIGHT_TOP = {
    'conv1': 'input_layer.0', 'bn1': 'input_layer.1', 'prelu': 'input_layer.2',
    'bn2': 'output_layer.0', 'fc': 'output_layer.3',
    'features': 'output_layer.4'
}
_INSIGHT_OPTIONS = dict(conv_shortcut_on_stride=True, embedding_bn_affine=True)


def insightface_to_oaml(state: Dict[str, torch.Tensor],
                        src: str = '<state_dict>') -> Tuple[OrderedDict, dict]:
    """Map an insightface ``iresnet`` state dict to ``backbone.*`` keys.

    Args:
        state (dict): insightface backbone state dict (``conv1``, ``layer1.0.*``...).
        src (str): File name for messages.

    Returns:
        tuple[OrderedDict, dict]: state dict and model settings (the backbone
        config includes ``conv_shortcut_on_stride=True, embedding_bn_affine=True``;
        channel order RGB).
    """
    state = {k[len('module.'):] if k.startswith('module.') else k: v
             for k, v in state.items()}
    units = {}
    for key in state:
        m = re.match(r'layer(\d)\.(\d+)\.', key)
        if m:
            stage, j = int(m.group(1)), int(m.group(2))
            units[stage] = max(units.get(stage, 0), j + 1)
    if sorted(units) != [1, 2, 3, 4]:
        raise CheckpointError(
            f'{src}: expected insightface stages layer1..layer4, found '
            f'{sorted(units)}')
    offset = {s: sum(units[t] for t in range(1, s)) for s in units}
    backbone, unmatched = OrderedDict(), []
    for key, value in state.items():
        m = re.match(r'layer(\d)\.(\d+)\.(.+)\.([^.]+)$', key)
        if m:
            stage, j, mod, param = int(m.group(1)), int(m.group(2)), \
                m.group(3), m.group(4)
            if mod in _INSIGHT_UNIT:
                k = offset[stage] + j
                backbone[f'body.{k}.{_INSIGHT_UNIT[mod]}.{param}'] = value
                continue
        else:
            mod, _, param = key.rpartition('.')
            if mod in _INSIGHT_TOP:
                backbone[f'{_INSIGHT_TOP[mod]}.{param}'] = value
                continue
        unmatched.append(key)
    if unmatched:
        _fail(src, 'keys with no place in IResNet', unmatched)
    cfg = infer_iresnet_config(backbone, src, **_INSIGHT_OPTIONS)
    if tuple(units[s] for s in (1, 2, 3, 4)) != \
            tuple(IRESNET_ARCHS[cfg['depth']][1]):
        raise CheckpointError(
            f'{src}: units per stage {[units[s] for s in (1, 2, 3, 4)]} are not '
            f'those of IR-{cfg["depth"]}')
    backbone = _check_loads(backbone, cfg, src)
    out = OrderedDict((f'backbone.{k}', v) for k, v in backbone.items())
    return out, dict(backbone=cfg, channel_order='rgb')


def oaml_to_insightface(backbone: Dict[str, torch.Tensor],
                        units: Tuple[int, ...]) -> OrderedDict:
    """Inverse of :func:`insightface_to_oaml` (IResNet keys, no prefix).

    Used by the tests to build an insightface-layout file, and documents the
    mapping in the other direction.

    Args:
        backbone (dict): IResNet state dict built with the insightface options.
        units (tuple[int]): Units per stage.

    Returns:
        OrderedDict: insightface ``iresnet`` key names.
    """
    unit_inv = {v: k for k, v in _INSIGHT_UNIT.items()}
    top_inv = {v: k for k, v in _INSIGHT_TOP.items()}
    where = []
    for stage, n in enumerate(units, 1):
        where += [(stage, j) for j in range(n)]
    out = OrderedDict()
    for key, value in backbone.items():
        m = re.match(r'body\.(\d+)\.(\w+\.\d+)\.([^.]+)$', key)
        if m:
            stage, j = where[int(m.group(1))]
            out[f'layer{stage}.{j}.{unit_inv[m.group(2)]}.{m.group(3)}'] = value
        else:
            mod, _, param = key.rpartition('.')
            out[f'{top_inv[mod]}.{param}'] = value
    return out
