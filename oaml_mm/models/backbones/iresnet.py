"""Improved ResNet (IR / IR-SE) backbones for 112x112 face images.

The layout follows ArcFace's IR network as released with AdaFace (Kim et al., "AdaFace:
Quality Adaptive Margin for Face Recognition", CVPR 2022, ``net.py``): a pre-activation
residual unit ``BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN``, a stride-2
first
unit per stage (112 -> 56 -> 28 -> 14 -> 7) and an output layer
``BN2d -> Dropout -> Flatten -> Linear -> BN1d``. Module names are those of AdaFace, so
``state_dict`` keys (``input_layer.*``, ``body.{i}.res_layer.*``,
``body.{i}.shortcut_layer.*``, ``output_layer.*``) load a released AdaFace checkpoint
once its ``model.`` prefix is stripped.

Two options exist only to load insightface ``iresnet`` weights exactly
(``tools/model_converters/insightface2oaml.py``): insightface uses a conv shortcut
whenever the unit has a stride (AdaFace pools when the width is unchanged, i.e. in the
first unit of stage 1) and an affine final BatchNorm1d.
"""
import itertools
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from oaml_mm.errors import ConfigError, InputSizeError
from oaml_mm.registry import MODELS
from ..functional.visibility import resize_visibility

__all__ = ['IResNet', 'IRESNET_ARCHS']

#: depth -> (unit type, units per stage, stage widths at width_mult 1.0)
IRESNET_ARCHS: Dict[int, Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = {
    18: ('basic', (2, 2, 2, 2), (64, 128, 256, 512)),
    34: ('basic', (3, 4, 6, 3), (64, 128, 256, 512)),
    50: ('basic', (3, 4, 14, 3), (64, 128, 256, 512)),
    100: ('basic', (3, 13, 30, 3), (64, 128, 256, 512)),
    101: ('basic', (3, 13, 30, 3), (64, 128, 256, 512)),
    152: ('bottleneck', (3, 8, 36, 3), (256, 512, 1024, 2048)),
    200: ('bottleneck', (3, 24, 36, 3), (256, 512, 1024, 2048)),
}

_STEM_WIDTH = 64


class SEModule(nn.Module):
    """Squeeze-and-excitation gate with bias-free 1x1 convs (AdaFace key names)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * w


def _shortcut(in_ch: int, out_ch: int, stride: int,
              conv_on_stride: bool) -> nn.Module:
    if in_ch == out_ch and not (conv_on_stride and stride != 1):
        # A 1x1 max pool with a stride is a parameter-free subsampling.
        return nn.MaxPool2d(1, stride)
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))


class _UnitIR(nn.Module):
    """A residual unit: ``res_layer(x) + shortcut_layer(x)`` (AdaFace key names).

    Subclasses build the shortcut (this ``__init__``) before their residual
    layers (:meth:`_set_residual`), the order the parameters are drawn in.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int,
                 conv_on_stride: bool) -> None:
        super().__init__()
        self.shortcut_layer = _shortcut(in_ch, out_ch, stride, conv_on_stride)

    def _set_residual(self, layers: list, out_ch: int, use_se: bool) -> None:
        if use_se:
            layers.append(SEModule(out_ch, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class BasicUnitIR(_UnitIR):
    """IR unit: BN, conv3x3, BN, PReLU, conv3x3(stride), BN [, SE]."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, use_se: bool,
                 conv_on_stride: bool) -> None:
        super().__init__(in_ch, out_ch, stride, conv_on_stride)
        self._set_residual([
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.PReLU(out_ch),
            nn.Conv2d(out_ch, out_ch, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ], out_ch, use_se)


class BottleneckUnitIR(_UnitIR):
    """IR bottleneck unit (IR-152/200): 1x1 reduce, 3x3, 1x1(stride) expand."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, use_se: bool,
                 conv_on_stride: bool) -> None:
        super().__init__(in_ch, out_ch, stride, conv_on_stride)
        mid = max(1, out_ch // 4)
        self._set_residual([
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, mid, 1, 1, 0, bias=False),
            nn.BatchNorm2d(mid),
            nn.PReLU(mid),
            nn.Conv2d(mid, mid, 3, 1, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.PReLU(mid),
            nn.Conv2d(mid, out_ch, 1, stride, 0, bias=False),
            nn.BatchNorm2d(out_ch),
        ], out_ch, use_se)


@MODELS.register_module()
class IResNet(BaseModule):
    """IR / IR-SE backbone returning feature maps, a unit embedding and its norm.

    Examples of use in a config::

        backbone = dict(type='IResNet', depth=50)                # AdaFace IR-50
        backbone = dict(type='IResNet', depth=50, use_se=True)   # IR-SE-50
        backbone = dict(type='IResNet', depth=18, width_mult=0.25,
                        embedding_size=128, channels_last=True)  # CPU toy

    Args:
        depth (int): One of 18, 34, 50, 100 (alias 101), 152, 200.
        use_se (bool): Add a squeeze-and-excitation gate to every unit.
            Defaults to False.
        width_mult (float): Multiplies every width (stem and stages); 0.25 gives
            16/32/64/128 for the basic units. Defaults to 1.0.
        embedding_size (int): Size of the embedding. Defaults to 512.
        input_size (int): Side of the square input; the maps are input_size/16.
            Defaults to 112.
        dropout (float): Dropout before the embedding layer. Defaults to 0.4.
        conv_shortcut_on_stride (bool): Use a conv1x1+BN shortcut in every strided
            unit (insightface layout) instead of a 1x1 max pool when the width does
            not change (AdaFace layout). Defaults to False.
        embedding_bn_affine (bool): Make the final BatchNorm1d affine (insightface's
            ``features``). Defaults to False (AdaFace).
        channels_last (bool): Run the convolutions in channels-last memory format
            (about 1.5x faster on CPU). Defaults to False.
        map_stage (int): Stage (1-4) whose output is returned as the feature maps
            that QAConv and the occlusion head use: 4 (default) the last stage,
            input/16 (7x7 at 112); 3 the stage before, input/8 (14x14), each
            cell covering a quarter of the area (QAConv's person re-ID models
            match at this resolution). The embedding always comes from the last stage.
        init_cfg (dict, optional): mmengine initialisation config.

    Returns (forward):
        tuple: ``feat_maps`` [B, C, h, w] (stage ``map_stage``; the last stage,
        before the output layer, by default),
        ``embedding`` [B, D] with unit L2 norm and ``norm`` [B, 1].
        ``forward(x, weight)`` weights the embedding's cells by a visibility map;
        ``forward_maps`` and ``embed`` are its two halves (the recognizer predicts
        visibility between them).
    """

    def __init__(self,
                 depth: int = 50,
                 use_se: bool = False,
                 width_mult: float = 1.0,
                 embedding_size: int = 512,
                 input_size: int = 112,
                 dropout: float = 0.4,
                 conv_shortcut_on_stride: bool = False,
                 embedding_bn_affine: bool = False,
                 channels_last: bool = False,
                 map_stage: int = 4,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if depth not in IRESNET_ARCHS:
            raise ConfigError(
                f'IResNet: depth {depth!r} is not one of '
                f'{sorted(IRESNET_ARCHS)}')
        if width_mult <= 0:
            raise ConfigError(f'IResNet: width_mult must be > 0, got {width_mult}')
        if input_size % 16 != 0:
            raise ConfigError(
                f'IResNet: input_size must be a multiple of 16, got {input_size}')
        if map_stage not in (1, 2, 3, 4):
            raise ConfigError(
                f'IResNet: map_stage must be 1, 2, 3 or 4, got {map_stage!r}')
        unit_type, units, widths = IRESNET_ARCHS[depth]
        self.depth = depth
        self.units: Sequence[int] = units
        self.feat_size = input_size // 16
        self.input_size = input_size
        self.map_stage = map_stage
        #: Side of the returned feature maps.
        self.map_size = input_size // 2**map_stage
        # Units up to and including the map stage: body[:n] makes the maps.
        self._map_units = sum(units[:map_stage])
        self.channels_last = channels_last
        stem = max(1, int(round(_STEM_WIDTH * width_mult)))
        widths = [max(1, int(round(w * width_mult))) for w in widths]
        #: Channels of the returned feature maps.
        self.out_channels = widths[map_stage - 1]
        #: Channels of each stage's output (:meth:`forward_stages`).
        self.stage_channels = tuple(widths)
        self.embedding_size = embedding_size

        self.input_layer = nn.Sequential(
            nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem),
            nn.PReLU(stem))
        unit_cls = BasicUnitIR if unit_type == 'basic' else BottleneckUnitIR
        body = []
        in_ch = stem
        for n_units, out_ch in zip(units, widths):
            for j in range(n_units):
                body.append(
                    unit_cls(in_ch, out_ch, 2 if j == 0 else 1, use_se,
                             conv_shortcut_on_stride))
                in_ch = out_ch
        self.body = nn.Sequential(*body)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(widths[-1]), nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(widths[-1] * self.feat_size**2, embedding_size),
            nn.BatchNorm1d(embedding_size, affine=embedding_bn_affine))
        self._reset_parameters()
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def _reset_parameters(self) -> None:
        # AdaFace's initialisation: He (fan-out) convs, He linear, unit BN.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out',
                                        nonlinearity='relu')
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def init_weights(self) -> None:
        # Only an explicit init_cfg (e.g. Pretrained) overrides the constructor's init.
        if self.init_cfg:
            super().init_weights()

    def forward(
        self,
        x: torch.Tensor,
        weight: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Compute feature maps, unit embedding and embedding norm.

        Args:
            x (Tensor): Images [B, 3, H, W], normalised.
            weight (Tensor, optional): Per-cell weight of the embedding [B, 1, h, w]
                in [0, 1] (visibility); see :meth:`embed`. None: the plain
                embedding.

        Returns:
            tuple[Tensor, Tensor, Tensor]: maps [B, C, H/2^s, W/2^s] of stage
            s = ``map_stage`` (H/16 by default; never weighted), embedding [B, D]
            (unit L2 norm), norm [B, 1].
        """
        maps, last = self.forward_maps(x)
        return (maps, ) + self.embed(last, weight)

    def forward_maps(self,
                     x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run the convolutional trunk: the maps of ``map_stage`` and of the last stage.

        Args:
            x (Tensor): Images [B, 3, H, W], normalised.

        Returns:
            tuple[Tensor, Tensor]: maps [B, C, H/2^s, W/2^s] of stage s =
            ``map_stage`` and the last stage's maps [B, C4, H/16, W/16] that
            :meth:`embed` turns into the embedding (the same tensor when
            ``map_stage`` is 4).

        Raises:
            InputSizeError: ``x`` is not a batch of 3-channel
                ``input_size x input_size`` images.
        """
        stages = self.forward_stages(x)
        return stages[self.map_stage - 1], stages[-1]

    def forward_stages(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Run the convolutional trunk and keep the output of every stage.

        What :meth:`forward_maps` computes, with the earlier stages kept: a
        neck that reads several stages (``MultiScaleOcclusionHead``) gets them
        from the same forward pass as the maps and the embedding.

        Args:
            x (Tensor): Images [B, 3, H, W], normalised.

        Returns:
            tuple[Tensor, ...]: The four stage outputs, stage s of side
            H/2^s (56, 28, 14, 7 at 112) and width ``stage_channels[s - 1]``;
            the last is what :meth:`embed` turns into the embedding.

        Raises:
            InputSizeError: ``x`` is not a batch of 3-channel
                ``input_size x input_size`` images.
        """
        checking = not (torch.jit.is_tracing() or torch.jit.is_scripting())
        if checking and (x.dim() != 4 or x.shape[1] != 3):
            raise InputSizeError(
                f'IResNet: input has shape {tuple(x.shape)}, expected a batch '
                f'of 3-channel images [B, 3, {self.input_size}, '
                f'{self.input_size}]; convert grayscale or RGBA images to 3 '
                'channels (e.g. color_type=\'color\' when decoding)')
        if checking and \
                tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            # The embedding layer's width is fixed by input_size; anything else
            # would fail inside it as "mat1 and mat2 shapes cannot be multiplied".
            h, w = x.shape[-2:]
            raise InputSizeError(
                f'IResNet: input images are {h}x{w}, but this backbone is built '
                f'for {self.input_size}x{self.input_size} (input_size='
                f'{self.input_size}). Align or resize the faces to '
                f'{self.input_size}x{self.input_size} (e.g. add dict(type='
                f"'Resize', scale=({self.input_size}, {self.input_size})) to the "
                'pipeline), or set model.backbone.input_size to the images\' '
                'side (a multiple of 16; pretrained weights then no longer fit)')
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.input_layer(x)
        stages = []
        ends = set(itertools.accumulate(self.units))
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i + 1 in ends:
                stages.append(x)
        return tuple(stages)

    def embed(
        self,
        last_maps: torch.Tensor,
        weight: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Embed the last stage's maps, each cell weighted (the output layer).

        With a weight, the last-stage maps are multiplied by it before the output
        layer, so a cell weighted 0 enters the embedding as a fixed code (the
        output BatchNorm2d's shift) whatever its content: occluded cells cannot
        corrupt it (the idea of FROM: Qiu et al., "End2End Occluded Face
        Recognition by Masking Corrupted Features", TPAMI 2021, which learns a
        mask over the corrupted features; here the mask is the visibility map).
        Before the BatchNorm2d rather than after it: an eval-mode BatchNorm is then
        still an affine map in front of the linear layer, which
        :func:`~oaml_mm.models.utils.fold_batchnorm` folds exactly (FaceRecognizer's
        CPU path and the ONNX graph give the same embedding), and in training an
        occluded cell's content stays out of the batch statistics too. No
        renormalisation by the mean weight (docs/models.md, "Visibility in the
        global branch").

        Args:
            last_maps (Tensor): Last-stage maps [B, C4, f, f] (``feat_size`` f),
                as :meth:`forward_maps` returns them.
            weight (Tensor, optional): [B, 1, h, w] in [0, 1]; a grid other than
                f x f is brought onto it by
                :func:`~oaml_mm.models.functional.visibility.resize_visibility`
                (area average down, nearest up). None: the plain embedding,
                bit-identical to the unweighted output layer.

        Returns:
            tuple[Tensor, Tensor]: embedding [B, D] (unit L2 norm), norm [B, 1].

        Raises:
            ConfigError: ``weight`` is not [B, 1, h, w] with the maps' batch size.
        """
        if weight is None:
            return l2_with_norm(self.output_layer(last_maps))
        checking = not (torch.jit.is_tracing() or torch.jit.is_scripting())
        if checking and (weight.dim() != 4 or weight.shape[1] != 1
                         or weight.shape[0] != last_maps.shape[0]):
            raise ConfigError(
                f'IResNet.embed: weight must be [{last_maps.shape[0]}, 1, h, w], '
                f'got {tuple(weight.shape)}')
        weight = resize_visibility(weight, last_maps.shape[-1])
        return l2_with_norm(
            self.output_layer(last_maps * weight.to(last_maps.dtype)))


def l2_with_norm(x: torch.Tensor,
                 eps: float = 1e-12) -> Tuple[torch.Tensor, torch.Tensor]:
    """Split embeddings into unit direction and L2 norm (AdaFace's output).

    Args:
        x (Tensor): Embeddings [B, D].
        eps (float): Lower bound of the divisor.

    Returns:
        tuple[Tensor, Tensor]: ``x / |x|`` [B, D] and ``|x|`` [B, 1].
    """
    norm = torch.norm(x.float(), 2, 1, True).to(x.dtype)
    return x / norm.clamp_min(eps), norm
