"""VisibilitySegmentor: trains an OcclusionSegmenter on its own with tools/train.py.

The segmenter (``oaml_mm/models/necks/occlusion_segmenter.py``) is trained once on
generated occluders and then loaded, frozen or fine-tuned, by any recognizer
(docs/models.md, "Occlusion segmenter"). This model is that first training: images
in, ``gt_visibility`` (packed at the segmenter's 1/4 scale, e.g.
``PackFaceInputs(grid=(28, 28))``) as the target. Its checkpoint keys start with
``segmenter.``, the ``prefix`` a recognizer's ``Pretrained`` init strips.
"""
from typing import Dict, List, Optional, Union

import torch
from mmengine.model import BaseModel
from mmpretrain.structures import DataSample

from oaml_mm.errors import ConfigError, DataFormatError
from oaml_mm.registry import MODELS
from ..functional.visibility import stack_gt_visibility

__all__ = ['VisibilitySegmentor']


@MODELS.register_module()
class VisibilitySegmentor(BaseModel):
    """A visibility segmenter with its data preprocessor, trainable on its own.

    Examples::

        model = dict(type='VisibilitySegmentor',
                     segmenter=dict(type='OcclusionSegmenter'),
                     data_preprocessor=dict(type='FaceDataPreprocessor'))

    Args:
        segmenter (dict): Config of an image-reading visibility neck
            (``OcclusionSegmenter``).
        data_preprocessor (dict, optional): Defaults to
            ``FaceDataPreprocessor()``; use the recognizer's, so the segmenter
            sees the inputs it will see there.
        init_cfg (dict, optional): mmengine initialisation config.

    Raises:
        ConfigError: The segmenter does not read images, or is frozen.
    """

    def __init__(self,
                 segmenter: dict,
                 data_preprocessor: Optional[Union[dict, torch.nn.Module]] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type='FaceDataPreprocessor')
        if isinstance(data_preprocessor, dict):
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.segmenter = MODELS.build(segmenter)
        if getattr(self.segmenter, 'reads', 'maps') != 'image':
            raise ConfigError(
                f'VisibilitySegmentor: segmenter {type(self.segmenter).__name__}'
                " does not read images (reads != 'image')")
        if getattr(self.segmenter, 'frozen', False):
            raise ConfigError('VisibilitySegmentor: a frozen segmenter cannot '
                              'be trained (segmenter.frozen=False)')

    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor',
                occlusion: Optional[dict] = None):
        """``'tensor'``: visibility [B, 1, H/4, W/4]; ``'loss'``: ``{'loss_vis'}``;
        ``'predict'``: one DataSample per image with ``visibility`` [1, H/4, W/4].

        ``occlusion`` (``{'inputs', 'data_samples'}``, the second stream
        ``FaceDataPreprocessor`` passes on) joins the loss when given.

        Raises:
            DataFormatError: Loss mode without ``gt_visibility`` on the samples.
            ConfigError: An unknown mode.
        """
        if mode == 'tensor':
            return self.segmenter(inputs)
        if mode == 'loss':
            gt = stack_gt_visibility(data_samples or [])
            if gt is None:
                raise DataFormatError(
                    '<batch>', 'no sample carries gt_visibility (pack with '
                    'PackFaceInputs(grid=(28, 28)))', field='gt_visibility')
            batches, targets = [inputs], [gt]
            if occlusion is not None and occlusion.get('inputs') is not None:
                batches.append(occlusion['inputs'])
                targets.append(stack_gt_visibility(
                    occlusion.get('data_samples')))
            _, losses = self.segmenter.loss(batches, targets)
            return dict(loss_vis=losses['loss'])
        if mode == 'predict':
            vis = self.segmenter(inputs)
            if data_samples is None:
                data_samples = [DataSample() for _ in range(inputs.shape[0])]
            for i, s in enumerate(data_samples):
                s.set_field(vis[i].detach(), 'visibility', field_type='data')
            return data_samples
        raise ConfigError(f'VisibilitySegmentor: unknown mode {mode!r}')

    def num_parameters(self) -> Dict[str, int]:
        """``{'segmenter': N}`` parameters (for reports)."""
        return dict(segmenter=sum(p.numel()
                                  for p in self.segmenter.parameters()))
