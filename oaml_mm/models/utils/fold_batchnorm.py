"""Fold inference-mode BatchNorm layers into the adjacent convolution / linear layer.

In eval mode a BatchNorm is a fixed per-channel affine map ``y = a * x + b``
(``a = gamma / sqrt(running_var + eps)``, ``b = beta - a * running_mean``). When it
directly follows a convolution or linear layer, the pair is one convolution / linear
layer with scaled weights and a bias (Ioffe & Szegedy, "Batch Normalization", ICML
2015, section 3.2; ``torch.nn.utils.fusion`` does the arithmetic). For IResNet this
removes the BN after every convolution, the BN1d after the embedding FC and the BN2d
in front of it (an affine map before ``Flatten -> Linear`` folds into the FC's
columns). A BN *in front of* a padded convolution (IResNet's first BN of each unit)
is kept: the convolution pads the BN's output with zeros, which a folded
convolution would see as ``b`` instead, so the result would change at the borders.
"""
import copy
from typing import List

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

__all__ = ['fold_batchnorm', 'inference_model']

_SKIP = (nn.Dropout, nn.Identity)  # identities in eval mode


def _affine(bn: nn.modules.batchnorm._BatchNorm):
    """``(gamma, beta)``; ones and zeros for a BN without affine parameters."""
    if bn.affine:
        return bn.weight, bn.bias
    return torch.ones_like(bn.running_var), torch.zeros_like(bn.running_mean)


def _fuse_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    fused = copy.deepcopy(conv)
    fused.weight, fused.bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
        *_affine(bn))
    return fused


def _fuse_linear(linear: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    fused = copy.deepcopy(linear)
    fused.weight, fused.bias = fuse_linear_bn_weights(
        linear.weight, linear.bias, bn.running_mean, bn.running_var, bn.eps,
        *_affine(bn))
    return fused


def _fold_bn_into_following_linear(bn: nn.BatchNorm2d,
                                   linear: nn.Linear) -> nn.Linear:
    """``Linear(Flatten(BN(x)))`` as one Linear; ``x`` is [B, C, h, w]."""
    gamma, beta = _affine(bn)
    scale = gamma / torch.sqrt(bn.running_var + bn.eps)
    shift = beta - bn.running_mean * scale
    per_channel = linear.in_features // scale.numel()
    scale = scale.repeat_interleave(per_channel)  # Flatten order: c-major
    shift = shift.repeat_interleave(per_channel)
    fused = copy.deepcopy(linear)
    with torch.no_grad():
        bias = linear.bias if linear.bias is not None else \
            linear.weight.new_zeros(linear.out_features)
        fused.bias = nn.Parameter(bias + linear.weight @ shift)
        fused.weight = nn.Parameter(linear.weight * scale)
    return fused


def _fold_sequential(seq: nn.Sequential) -> int:
    """Fold the pairs inside one Sequential in place; returns how many."""
    mods: List[nn.Module] = list(seq)
    folded = 0
    for i, m in enumerate(mods):
        if isinstance(m, nn.BatchNorm2d) and i > 0 and \
                isinstance(mods[i - 1], nn.Conv2d) and \
                m.track_running_stats:
            mods[i - 1] = _fuse_conv(mods[i - 1], m)
            mods[i] = nn.Identity()
            folded += 1
        elif isinstance(m, nn.BatchNorm1d) and i > 0 and \
                isinstance(mods[i - 1], nn.Linear) and m.track_running_stats:
            mods[i - 1] = _fuse_linear(mods[i - 1], m)
            mods[i] = nn.Identity()
            folded += 1
    for i, m in enumerate(mods):
        if not (isinstance(m, nn.BatchNorm2d) and m.track_running_stats):
            continue
        j = i + 1
        while j < len(mods) and isinstance(mods[j], _SKIP):
            j += 1
        if j + 1 < len(mods) and isinstance(mods[j], nn.Flatten) and \
                isinstance(mods[j + 1], nn.Linear) and \
                mods[j + 1].in_features % m.num_features == 0:
            mods[j + 1] = _fold_bn_into_following_linear(m, mods[j + 1])
            mods[i] = nn.Identity()
            folded += 1
    for i, m in enumerate(mods):
        seq[i] = m
    return folded


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An inference copy of ``model`` with BatchNorms folded into their neighbours.

    Folds, inside every ``nn.Sequential``: ``Conv2d -> BatchNorm2d``,
    ``Linear -> BatchNorm1d`` and ``BatchNorm2d -> [Dropout] -> Flatten -> Linear``.
    Other BatchNorms (before a padded convolution, outside a Sequential) are kept.
    The copy is in eval mode and computes the same function as ``model.eval()`` up
    to float32 rounding (tested: IResNet maps and embeddings within 2e-5 of their
    largest value); it must not be trained (its BatchNorms are gone). ``model`` is
    not modified.

    Args:
        model (nn.Module): Any module, e.g. an ``IResNet`` or ``OAMLRecognizer``.

    Returns:
        nn.Module: The folded copy (same class, eval mode).

    Examples:
        >>> seq = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
        >>> folded = fold_batchnorm(seq)
        >>> [type(m).__name__ for m in folded]
        ['Conv2d', 'Identity']
    """
    folded = copy.deepcopy(model).eval()
    memory_format = None
    for p in folded.parameters():
        if p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) \
                and not p.is_contiguous():
            memory_format = torch.channels_last
            break
    for m in list(folded.modules()):
        if isinstance(m, nn.Sequential):
            _fold_sequential(m)
    if memory_format is not None:
        # fuse_conv_bn_eval returns contiguous weights; keep the model's layout.
        folded.to(memory_format=memory_format)
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded


def inference_model(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """The fast CPU inference copy: :func:`fold_batchnorm`, then channels-last.

    ``FaceRecognizer.extract`` and ``benchmarks/bench_inference.py`` use it. On the
    project's CPU it ran 1.2-1.8x the eager model's images/s, reaching or passing
    onnxruntime on the same graph (``docs/benchmarks.md``, "5. Inference").

    Args:
        model (nn.Module): An eval-mode model; modules with a ``channels_last``
            attribute (``IResNet``) are switched to it so that they convert their
            input.
        channels_last (bool): Convert to the channels-last memory format.

    Returns:
        nn.Module: The folded copy (eval mode, no gradients).
    """
    fast = fold_batchnorm(model)
    if channels_last:
        fast.to(memory_format=torch.channels_last)
        for m in fast.modules():
            if hasattr(m, 'channels_last'):
                m.channels_last = True
    return fast
