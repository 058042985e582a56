"""Log the predicted visibility maps of a fixed validation batch while training.

The occlusion head is trained on a separate stream and its loss alone says little
about *what* it predicts. Drawing its map (on the model's grid) over the same
validation faces every few epochs (mmengine's visualizer, so TensorBoard shows a
slider over the steps) lets a user see it learn to mark masks, scarves and niqabs.
The batch is taken once, before training, so every logged picture shows the same
faces.
"""
from typing import Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from oaml_mm.errors import ConfigError
from oaml_mm.registry import HOOKS
from oaml_mm.visualization import draw_visibility_grid

__all__ = ['VisibilityVisualizationHook']


@HOOKS.register_module()
class VisibilityVisualizationHook(Hook):
    """Add an image ``visibility`` of predicted maps to the runner's visualizer.

    With ``TensorboardVisBackend`` among the ``vis_backends`` (the default runtime
    has it) the pictures appear in TensorBoard's Images tab.

    Example::

        custom_hooks = [dict(type='VisibilityVisualizationHook', interval=1,
                             num_images=16, dataloader_index=2)]

    Args:
        interval (int): Log every ``interval`` epochs (``by_epoch``) or iterations.
            Defaults to 1.
        by_epoch (bool): Count epochs (True) or iterations. Defaults to True.
        num_images (int): Faces in the picture (from the start of the first
            validation batches). Defaults to 16.
        dataloader_index (int): Which validation dataloader (``FaceValLoop`` may
            hold several) supplies the faces. Defaults to 0.
        ncol (int): Faces per row. Defaults to 8.
        scale (int): Upscaling of each face. Defaults to 1.
        name (str): Image name in the visualizer. Defaults to ``'visibility'``.
    """

    priority = 'LOW'

    def __init__(self,
                 interval: int = 1,
                 by_epoch: bool = True,
                 num_images: int = 16,
                 dataloader_index: int = 0,
                 ncol: int = 8,
                 scale: int = 1,
                 name: str = 'visibility') -> None:
        if interval < 1 or num_images < 1:
            raise ConfigError('VisibilityVisualizationHook: interval and '
                              'num_images must be >= 1')
        self.interval = int(interval)
        self.by_epoch = by_epoch
        self.num_images = int(num_images)
        self.dataloader_index = int(dataloader_index)
        self.ncol = ncol
        self.scale = scale
        self.name = name
        self.batch: Optional[torch.Tensor] = None

    def _dataloader(self, runner):
        loop = runner.val_loop
        loaders = getattr(loop, 'dataloaders', None) or [loop.dataloader]
        if self.dataloader_index >= len(loaders):
            raise ConfigError(
                f'VisibilityVisualizationHook: dataloader_index '
                f'{self.dataloader_index} but there are {len(loaders)} '
                'validation dataloaders')
        return loaders[self.dataloader_index]

    def before_train(self, runner) -> None:
        if runner.val_loop is None:
            return
        images = []
        count = 0
        for data in self._dataloader(runner):
            for img in data['inputs']:
                images.append(torch.as_tensor(img))
                count += 1
                if count >= self.num_images:
                    break
            if count >= self.num_images:
                break
        if images:
            self.batch = torch.stack(images)

    def log_now(self, runner) -> None:
        """Draw the fixed batch with the current model and hand it to the visualizer."""
        if self.batch is None:
            return
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                x = model.data_preprocessor.normalize(self.batch)
                vis = model.extract(x, flip_test=False,
                                    return_feature_maps=False)['visibility']
        finally:
            model.train(was_training)
        rgb = self.batch.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)
        picture = draw_visibility_grid(rgb, vis.float().cpu().numpy(), self.ncol,
                                       self.scale)
        step = runner.epoch if self.by_epoch else runner.iter
        runner.visualizer.add_image(self.name, picture, step=step)

    def after_train_epoch(self, runner) -> None:
        if self.by_epoch and self.every_n_epochs(runner, self.interval):
            self.log_now(runner)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if not self.by_epoch and self.every_n_train_iters(runner, self.interval):
            self.log_now(runner)
