"""Face data preprocessor: channel order, mean/std and the two training streams.

Released AdaFace weights were trained on BGR images normalised as
``(x / 255 - 0.5) / 0.5``, insightface weights on RGB images with the same
normalisation (docs/models.md); the pipeline decodes RGB, so the channel order the
*weights* expect is a config choice here. The occlusion stream that
``DualLoaderHook`` adds to a training batch (``data['occlusion']``) goes through the
same conversion.
"""
from typing import List, Sequence, Union

import torch
from mmengine.model import BaseDataPreprocessor

from oaml_mm.errors import ConfigError, DataFormatError
from oaml_mm.registry import MODELS

__all__ = ['FaceDataPreprocessor']


@MODELS.register_module()
class FaceDataPreprocessor(BaseDataPreprocessor):
    """Stack uint8 RGB images, reorder channels, normalise; also the occlusion batch.

    Examples::

        data_preprocessor = dict(type='FaceDataPreprocessor', channel_order='bgr')
        data_preprocessor = dict(type='FaceDataPreprocessor', channel_order='rgb',
                                 mean=[127.5] * 3, std=[127.5] * 3)

    Args:
        channel_order (str): ``'rgb'`` or ``'bgr'``: the order the model's weights
            expect (inputs arrive RGB). AdaFace weights need ``'bgr'``. Defaults to
            ``'bgr'``.
        mean (float | sequence): Per-channel mean in the *output* channel order.
            Defaults to 127.5.
        std (float | sequence): Per-channel std. Defaults to 127.5.
        non_blocking (bool): Non-blocking host-to-device copies.

    Returns (forward):
        dict: ``inputs`` [B, 3, H, W] float, ``data_samples`` (on the device) and
        ``occlusion``: ``{'inputs', 'data_samples'}`` for the occlusion stream, or None.
    """

    def __init__(self,
                 channel_order: str = 'bgr',
                 mean: Union[float, Sequence[float]] = 127.5,
                 std: Union[float, Sequence[float]] = 127.5,
                 non_blocking: bool = False) -> None:
        super().__init__(non_blocking)
        if channel_order not in ('rgb', 'bgr'):
            raise ConfigError(
                "FaceDataPreprocessor: channel_order must be 'rgb' or 'bgr', got "
                f'{channel_order!r}')
        self.channel_order = channel_order
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean_t.numel() not in (1, 3) or std_t.numel() not in (1, 3):
            raise ConfigError(
                'FaceDataPreprocessor: mean and std take 1 or 3 values')
        if bool((std_t <= 0).any()):
            raise ConfigError('FaceDataPreprocessor: std must be positive')
        self.register_buffer('mean', mean_t.expand(3).reshape(1, 3, 1, 1).clone(),
                             False)
        self.register_buffer('std', std_t.expand(3).reshape(1, 3, 1, 1).clone(),
                             False)

    def normalize(self, inputs: Union[torch.Tensor, List[torch.Tensor]]
                  ) -> torch.Tensor:
        """Stack, reorder and normalise a list of [3, H, W] images (or a batch)."""
        if isinstance(inputs, (list, tuple)):
            if not inputs:
                raise DataFormatError('<batch>', 'empty batch of images',
                                      field='inputs')
            shapes = {tuple(x.shape) for x in inputs}
            if len(shapes) != 1:
                raise DataFormatError(
                    '<batch>', f'images of different shapes {sorted(shapes)}; '
                    'align/resize them to one size (e.g. 112x112) first',
                    field='inputs')
            inputs = torch.stack(list(inputs))
        if inputs.dim() != 4 or inputs.shape[1] != 3:
            raise DataFormatError(
                '<batch>', f'expected images [B, 3, H, W], got '
                f'{tuple(inputs.shape)}', field='inputs')
        x = inputs.to(self.device, non_blocking=self._non_blocking).float()
        if self.channel_order == 'bgr':
            x = x.flip(1)
        return (x - self.mean) / self.std

    def forward(self, data: dict, training: bool = False) -> dict:
        """Convert a collated batch (and its occlusion stream, if any)."""
        inputs = self.normalize(data['inputs'])
        samples = data.get('data_samples')
        if samples is not None:
            samples = self.cast_data(samples)
        occlusion = data.get('occlusion')
        if occlusion is not None:
            occ_samples = occlusion.get('data_samples')
            occlusion = dict(
                inputs=self.normalize(occlusion['inputs']),
                data_samples=None if occ_samples is None else self.cast_data(
                    occ_samples))
        return dict(inputs=inputs, data_samples=samples, occlusion=occlusion)
