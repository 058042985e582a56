"""OAMLRecognizer: AdaFace global embedding + occlusion-weighted QAConv matching.

OAML (docs/models.md) trains one IR backbone with three branches:

* the embedding -> AdaFace margin softmax (Kim et al., CVPR 2022);
* the feature maps -> QAConv in-batch matching losses (Liao & Shao, ECCV 2020 / CVPR
  2022), with the correlations weighted by a visibility map;
* the *detached* feature maps of a separate occlusion batch -> OcclusionHead -> MSE
  against ground-truth visibility.

Gradient isolation (docs/models.md): AdaFace -> backbone + margin head; QAConv ->
backbone + QAConv head (its visibility input is detached); occlusion -> OcclusionHead
only. With ``qaconv_head=None`` and ``neck=None`` the same class is the AdaFace-only
baseline.
"""
import difflib
import logging
from typing import Dict, List, Optional, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmpretrain.structures import DataSample

from oaml_mm.errors import ConfigError, DataFormatError
from oaml_mm.registry import MODELS
from ..functional.damage import damage_visibility, paste_occluders
from ..functional.qaconv import normalize_maps
from ..functional.visibility import (calibrate_visibility, check_vis_range,
                                     resize_visibility, stack_gt_visibility)

__all__ = ['OAMLRecognizer']

_DEFAULT_WEIGHTS = dict(adaface=0.1, qaconv=0.9, occlusion=0.1)
_DEFAULT_TRAIN_CFG = dict(
    qaconv_train_vis='pred', occ_on_main=False, global_vis='none',
    occ_target='mask')
_DEFAULT_TEST_CFG = dict(
    flip_test=False, return_feature_maps=False, half_maps=False,
    global_vis=False, vis_range=None, global_vis_range=None, pool_vis='raw')
#: test_cfg.pool_vis: the visibility map that templates (IJB, galleries) pool.
POOL_VIS = ('raw', 'calibrated')
#: train_cfg.global_vis: the visibility that weights the embedding in training.
_GLOBAL_VIS_MODES = ('none', 'gt', 'pred', 'gt_or_pred')
#: train_cfg.occ_target: what the occlusion head learns on the occlusion stream.
_OCC_TARGETS = ('mask', 'damage', 'mask*damage')
#: What a neck reads (its class attribute ``reads``): the feature maps QAConv
#: matches, or the outputs of the backbone stages it names (``neck.stages``).
_NECK_INPUTS = ('maps', 'stages', 'image')


@MODELS.register_module()
class OAMLRecognizer(BaseModel):
    """Occlusion-aware face recognizer (also the AdaFace-only baseline).

    Examples::

        model = dict(
            type='OAMLRecognizer',
            data_preprocessor=dict(type='FaceDataPreprocessor',
                                   channel_order='bgr'),
            backbone=dict(type='IResNet', depth=50),
            neck=dict(type='OcclusionHead', in_channels=512),
            head=dict(type='AdaFaceHead', in_channels=512, num_classes=10572),
            qaconv_head=dict(type='QAConvHead', in_channels=512),
            loss_weights=dict(adaface=0.1, qaconv=0.9, occlusion=0.1),
            train_cfg=dict(qaconv_train_vis='pred'),
            test_cfg=dict(flip_test=True, return_feature_maps=True,
                          half_maps=True))

        # AdaFace-only baseline: same backbone, no QAConv, no occlusion head.
        model = dict(type='OAMLRecognizer', backbone=dict(type='IResNet', depth=50),
                     head=dict(type='AdaFaceHead', num_classes=10572),
                     loss_weights=dict(adaface=1.0))

    Training is mmengine's ``train_step``: the update, and skipping it when the loss
    or a gradient is not finite, is the optimizer wrapper's business
    (``GuardedOptimWrapper`` in every shipped config; docs/reliability.md).

    Args:
        backbone (dict): IResNet config.
        head (dict, optional): Margin head config (AdaFaceHead, ArcFaceHead,
            CosFaceHead, PartialFCHead). It serves the training loss only: an
            inference config may leave it out (None); training such a model
            raises :class:`ConfigError`.
        neck (dict, optional): Visibility predictor: ``OcclusionHead`` (reads
            the detached feature maps), ``MultiScaleOcclusionHead`` (reads the
            detached outputs of several backbone stages) or
            ``OcclusionSegmenter`` (reads the image; frozen or fine-tuned, e.g.
            from its own checkpoint). The neck's class attribute ``reads``
            (``'maps'``, ``'stages'`` or ``'image'``) says which input it gets;
            its prediction is on the maps' grid. None: no visibility branch
            (predicted visibility is all ones).
        qaconv_head (dict, optional): QAConvHead config; without
            ``feat_size`` (or with None) it takes the backbone's map side
            (``map_size``: 7 for 112x112 faces, 4 for 64x64, 14 with
            ``map_stage=3``). None: no
            QAConv branch.
        loss_weights (dict, optional): ``adaface`` (0.1), ``qaconv`` (0.9) and
            ``occlusion`` (0.1); missing keys take these defaults.
        train_cfg (dict, optional): ``qaconv_train_vis`` (``'pred'``,
            ``'gt'`` or ``'none'``): visibility the QAConv losses use;
            ``occ_on_main`` (False): also train the occlusion head on main-batch
            samples that carry ``gt_visibility``; ``global_vis`` (``'none'``):
            visibility that weights the embedding's cells
            (:meth:`IResNet.embed`; docs/models.md, "Visibility in the global
            branch"): ``'gt'`` the main batch's true masks (none in the batch:
            unweighted), ``'pred'`` the occlusion head's prediction on the
            detached maps, ``'gt_or_pred'`` the true masks when the batch
            carries them, else the prediction; None means ``'none'``;
            ``occ_target`` (``'mask'``): the occlusion head's target on the
            occlusion stream: ``'mask'`` the true visibility, ``'damage'``
            ``1 - feature damage`` of each cell when the stream's occluders are
            pasted on the main batch's faces (:func:`damage_visibility`; the
            head then learns on those composites), ``'mask*damage'`` the
            product of the two (docs/models.md, "Feature-damage target").
        test_cfg (dict, optional): ``flip_test`` (False), ``return_feature_maps``
            (False), ``half_maps`` (False: fp16 feature maps in predictions),
            ``global_vis`` (False: weight the embedding by the predicted
            visibility, each flip-test view by its own), ``vis_range`` (None:
            the one calibration of the predicted visibility,
            :meth:`calibrate_visibility`: a ``(low, high)`` stretch applied
            wherever the map weighs something, QAConv's matching and the
            embedding (and the prediction in training with
            ``global_vis='pred'``); recorded by
            :func:`~oaml_mm.models.utils.embedding_settings`). Its older names
            ``qaconv_head.vis_range`` and ``test_cfg.global_vis_range`` are
            aliases: any of the three sets it for all; ``test_cfg.vis_range``
            given (None included) wins over the aliases (a differing alias is
            logged), and the two aliases differing without it raise
            :class:`ConfigError` naming both (docs/models.md,
            "Stretching the maps"); ``pool_vis`` (``'raw'``): the map a
            template (IJB, gallery) pools, ``'raw'`` the predictions (the
            pooled map is then calibrated where it is matched) or
            ``'calibrated'`` each image's calibrated map (:attr:`pool_vis_range`;
            measured worse on the SynthFace demo's mini IJB-C, docs/models.md).
        data_preprocessor (dict, optional): Defaults to
            ``FaceDataPreprocessor(channel_order='bgr')``.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 backbone: dict,
                 head: Optional[dict] = None,
                 neck: Optional[dict] = None,
                 qaconv_head: Optional[dict] = None,
                 loss_weights: Optional[Dict[str, float]] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[Union[dict, torch.nn.Module]] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type='FaceDataPreprocessor')
        if isinstance(data_preprocessor, dict):
            # Built here: BaseModel would look it up in mmengine's root registry.
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.head = MODELS.build(head) if head is not None else None
        self.neck = MODELS.build(neck) if neck is not None else None
        if isinstance(qaconv_head, dict) \
                and qaconv_head.get('feat_size') is None \
                and getattr(self.backbone, 'map_size', None) is not None:
            # The grid side follows the backbone's maps (input_size and
            # map_stage), never an assumed 7; None (e.g. from --cfg-options
            # model.qaconv_head.feat_size=None) means the same as absent.
            qaconv_head = dict(qaconv_head,
                               feat_size=int(self.backbone.map_size))
        self.qaconv_head = MODELS.build(
            qaconv_head) if qaconv_head is not None else None
        self.loss_weights = {**_DEFAULT_WEIGHTS, **(loss_weights or {})}
        self.train_cfg = {**_DEFAULT_TRAIN_CFG, **(train_cfg or {})}
        if self.train_cfg['global_vis'] is None:
            self.train_cfg['global_vis'] = 'none'
        self.test_cfg = {**_DEFAULT_TEST_CFG, **(test_cfg or {})}
        self._check_config()
        self._resolve_vis_range(explicit='vis_range' in (test_cfg or {}))

    def _resolve_vis_range(self, explicit: bool = False) -> None:
        """One calibration of the predicted map from ``test_cfg.vis_range`` and
        its aliases; the QAConv head and the global branch both read it.

        ``explicit``: ``test_cfg`` names ``vis_range`` (None included); it then
        wins over the aliases (an older base config's value, which a
        ``--cfg-options model.test_cfg.vis_range=...`` overrides), and an alias
        that differs is logged. Two aliases that differ are refused.
        """
        given = {'test_cfg.vis_range': self.test_cfg['vis_range'],
                 'test_cfg.global_vis_range': self.test_cfg['global_vis_range']}
        if self.qaconv_head is not None:
            given['qaconv_head.vis_range'] = getattr(self.qaconv_head,
                                                     'vis_range', None)
        ranges = {}
        for key, value in given.items():
            try:
                value = check_vis_range(value)
            except ConfigError as e:
                raise ConfigError(f'OAMLRecognizer: {key}: {e}') from e
            if value is not None:
                ranges[key] = value
        #: What the config gave under the embedding's old key (recorded as such
        #: by embedding_settings, so that older galleries still compare).
        self._global_vis_range_given = ranges.get('test_cfg.global_vis_range')
        if explicit:
            new = ranges.pop('test_cfg.vis_range', None)
            overridden = {k: v for k, v in ranges.items() if v != new}
            if overridden:
                print_log(
                    'OAMLRecognizer: test_cfg.vis_range=' + str(new) +
                    ' overrides ' + ', '.join(
                        f'{k}={v}' for k, v in overridden.items()) +
                    ' (older names of the same calibration)',
                    logger='current', level=logging.WARNING)
            ranges = {} if new is None else {'test_cfg.vis_range': new}
        if len(set(ranges.values())) > 1:
            raise ConfigError(
                'OAMLRecognizer: the visibility calibration is set twice with '
                'different values: ' + ', '.join(
                    f'{k}={v}' for k, v in ranges.items()) + '; QAConv and the '
                'global branch read one calibrated map: set test_cfg.vis_range '
                'only (the other keys are its older names, which it overrides)')
        vis_range = next(iter(ranges.values()), None)
        self.test_cfg['vis_range'] = vis_range
        self.test_cfg['global_vis_range'] = vis_range
        if self.qaconv_head is not None:
            self.qaconv_head.vis_range = vis_range

    @property
    def vis_range(self) -> Optional[Tuple[float, float]]:
        """The one calibration of the predicted visibility (None: the raw map)."""
        return self.test_cfg['vis_range']

    @property
    def pool_vis_range(self) -> Optional[Tuple[float, float]]:
        """The calibration each image's map goes through before a template
        pools it: :attr:`vis_range` with ``test_cfg.pool_vis='calibrated'``,
        None with ``'raw'`` (the default: the raw maps are pooled and the
        matcher calibrates the pooled map). A model asked for ``'calibrated'``
        that has no calibration yet pools the raw maps and logs a warning once."""
        if self.test_cfg['pool_vis'] != 'calibrated':
            return None
        if self.vis_range is None and not getattr(self, '_warned_pool', False):
            # Not an error: a model is built (and validated while training)
            # before tools/calibrate.py gives it a calibration.
            self._warned_pool = True
            print_log(
                "OAMLRecognizer: test_cfg.pool_vis='calibrated' but the model "
                'has no test_cfg.vis_range (not calibrated): templates pool the '
                'raw maps; run tools/calibrate.py or set test_cfg.vis_range',
                logger='current', level=logging.WARNING)
        return self.vis_range

    def calibrate_visibility(self, vis: Optional[torch.Tensor]
                             ) -> Optional[torch.Tensor]:
        """The map as QAConv and the global branch read it: ``vis`` stretched
        by :attr:`vis_range` (:func:`~oaml_mm.models.functional.visibility.
        calibrate_visibility`); unchanged when it is None.

        Args:
            vis (Tensor, optional): Visibility in [0, 1], any shape.

        Returns:
            Tensor or None: Same shape and dtype.
        """
        return calibrate_visibility(vis, self.vis_range)

    def _check_config(self) -> None:
        # A misspelt key (flip_tset=True) would be kept and never read: the
        # run would silently go without the setting the user asked for.
        for section, known in (('train_cfg', _DEFAULT_TRAIN_CFG),
                               ('test_cfg', _DEFAULT_TEST_CFG)):
            unknown = sorted(set(getattr(self, section)) - set(known)
                             - {'max_nonfinite_skips'})
            if unknown:
                hints = [f'{k!r} (did you mean {close[0]!r}?)' if close else
                         repr(k) for k in unknown
                         for close in [difflib.get_close_matches(k, known, 1)]]
                raise ConfigError(
                    f'OAMLRecognizer: unknown {section} key(s) '
                    f'{", ".join(hints)}; the keys are {sorted(known)}')
        for section, key in (('test_cfg', 'flip_test'),
                             ('test_cfg', 'return_feature_maps'),
                             ('test_cfg', 'half_maps'),
                             ('train_cfg', 'occ_on_main')):
            # 'no' or 'False' (a string) would switch the setting on.
            value = getattr(self, section)[key]
            if not isinstance(value, bool):
                raise ConfigError(f'OAMLRecognizer: {section}.{key} must be '
                                  f'True or False, got {value!r}')
        if self.test_cfg['pool_vis'] not in POOL_VIS:
            raise ConfigError(f'OAMLRecognizer: test_cfg.pool_vis must be one '
                              f'of {POOL_VIS}, got '
                              f'{self.test_cfg["pool_vis"]!r}')
        unknown = set(self.loss_weights) - set(_DEFAULT_WEIGHTS)
        if unknown:
            raise ConfigError(
                f'OAMLRecognizer: unknown loss_weights {sorted(unknown)}; use '
                f'{sorted(_DEFAULT_WEIGHTS)}')
        if self.train_cfg['qaconv_train_vis'] not in ('pred', 'gt', 'none'):
            raise ConfigError(
                "OAMLRecognizer: train_cfg.qaconv_train_vis must be 'pred', "
                f"'gt' or 'none', got {self.train_cfg['qaconv_train_vis']!r}")
        self._check_global_vis()
        if self.train_cfg['occ_target'] not in _OCC_TARGETS:
            raise ConfigError(
                f'OAMLRecognizer: train_cfg.occ_target must be one of '
                f"{_OCC_TARGETS}, got {self.train_cfg['occ_target']!r}")
        if self.train_cfg['occ_target'] != 'mask' and self.neck is None:
            raise ConfigError(
                f"OAMLRecognizer: train_cfg.occ_target="
                f"{self.train_cfg['occ_target']!r} is a target of the occlusion "
                'head, and this model has none (neck=None)')
        if 'max_nonfinite_skips' in self.train_cfg:
            # The non-finite guard is the optimizer wrapper's (one for every
            # model, single-process and DDP alike).
            raise ConfigError(
                'OAMLRecognizer: train_cfg.max_nonfinite_skips moved to the '
                "optimizer wrapper: optim_wrapper = dict(type='GuardedOptimWrapper', "
                'max_nonfinite_skips=N, ...)')
        emb = getattr(self.backbone, 'embedding_size', None)
        if emb is not None and self.head is not None and \
                emb != self.head.in_channels:
            raise ConfigError(
                f'OAMLRecognizer: head.in_channels={self.head.in_channels} but '
                f'the backbone embeds into {emb} dimensions')
        width = getattr(self.backbone, 'out_channels', None)
        parts = [('qaconv_head', self.qaconv_head)]
        if self._neck_reads == 'maps':
            parts.append(('neck', self.neck))
        for name, part in parts:
            if part is not None and width is not None and \
                    part.in_channels != width:
                raise ConfigError(
                    f'OAMLRecognizer: {name}.in_channels={part.in_channels} but '
                    f'the backbone maps have {width} channels')
        if self._neck_reads == 'stages':
            self._check_stage_neck()
        size = getattr(self.backbone, 'map_size', None)
        if self.qaconv_head is not None and size is not None and \
                self.qaconv_head.feat_size != size:
            raise ConfigError(
                f'OAMLRecognizer: qaconv_head.feat_size='
                f'{self.qaconv_head.feat_size} but the backbone maps are '
                f'{size}x{size} (backbone.map_stage)')

    @property
    def _neck_reads(self) -> Optional[str]:
        """What the neck reads (``'maps'``, ``'stages'`` or ``'image'``); None
        without one."""
        if self.neck is None:
            return None
        reads = getattr(self.neck, 'reads', 'maps')
        if reads not in _NECK_INPUTS:
            raise ConfigError(
                f'OAMLRecognizer: neck {type(self.neck).__name__} reads '
                f'{reads!r}; this recognizer feeds one of {_NECK_INPUTS}')
        return reads

    def _check_stage_neck(self) -> None:
        widths = getattr(self.backbone, 'stage_channels', None)
        if widths is None or not hasattr(self.backbone, 'forward_stages'):
            raise ConfigError(
                f'OAMLRecognizer: neck {type(self.neck).__name__} reads backbone '
                f'stages, which {type(self.backbone).__name__} does not return '
                '(IResNet.forward_stages)')
        want = tuple(widths[s - 1] for s in self.neck.stages)
        if tuple(self.neck.in_channels) != want:
            raise ConfigError(
                f'OAMLRecognizer: neck.in_channels={tuple(self.neck.in_channels)} '
                f'but backbone stages {tuple(self.neck.stages)} have {want} '
                'channels')

    def _check_global_vis(self) -> None:
        mode = self.train_cfg['global_vis']
        if mode not in _GLOBAL_VIS_MODES:
            raise ConfigError(
                f'OAMLRecognizer: train_cfg.global_vis must be one of '
                f'{_GLOBAL_VIS_MODES} (or None), got {mode!r}')
        test = self.test_cfg['global_vis']
        if not isinstance(test, bool):
            raise ConfigError(
                'OAMLRecognizer: test_cfg.global_vis must be True or False, got '
                f'{test!r}')
        if self.neck is None and (mode != 'none' or test):
            # Even 'gt' needs it: the model trained on weighted embeddings is
            # then tested on unweighted ones, which it never learnt.
            raise ConfigError(
                f'OAMLRecognizer: train_cfg.global_vis={mode!r} / '
                f'test_cfg.global_vis={test!r} weight the embedding by '
                'visibility, which needs an occlusion head (neck=dict('
                "type='OcclusionHead', ...)) to predict it at test time")
        if not hasattr(self.backbone, 'embed') and (mode != 'none' or test):
            raise ConfigError(
                f'OAMLRecognizer: global_vis needs a backbone with '
                f'forward_maps() and embed() (IResNet); '
                f'{type(self.backbone).__name__} has none')

    # ------------------------------------------------------------------ forward
    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor',
                occlusion: Optional[dict] = None):
        """Dispatch on ``mode``: ``'tensor'``, ``'loss'`` or ``'predict'``.

        Args:
            inputs (Tensor): Preprocessed images [B, 3, H, W].
            data_samples (list[DataSample], optional): With ``gt_label`` for loss.
            mode (str): What to return.
            occlusion (dict, optional): ``{'inputs', 'data_samples'}`` of the
                occlusion stream (loss mode).

        Returns:
            tensor: (maps, embedding, norm); loss: dict of losses and accuracies;
            predict: list of DataSample.
        """
        if mode == 'tensor':
            return self.backbone(inputs)
        if mode == 'loss':
            return self.loss(inputs, data_samples, occlusion)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        raise ConfigError(f'OAMLRecognizer: unknown mode {mode!r}')

    def loss(self,
             inputs: torch.Tensor,
             data_samples: List[DataSample],
             occlusion: Optional[dict] = None) -> Dict[str, torch.Tensor]:
        """Weighted AdaFace, QAConv and occlusion losses plus accuracies."""
        if self.head is None:
            raise ConfigError(
                'OAMLRecognizer: no margin head (model.head is None): this '
                'config is for inference only; training needs model.head, e.g. '
                "dict(type='AdaFaceHead', in_channels=512, num_classes=N)")
        labels = self._labels(data_samples, inputs.device)
        w = self.loss_weights
        gv = self.train_cfg['global_vis']
        if gv == 'none' and self._neck_reads != 'stages':
            maps, emb, norm = self.backbone(inputs)
            neck_in = inputs if self._neck_reads == 'image' else maps
        else:
            # Trunk first: the occlusion head predicts before the embedding.
            maps, last, neck_in = self._trunk(inputs)
            if gv == 'none':
                emb, norm = self.backbone.embed(last)
        losses = {}

        # The occlusion head sees detached maps: its loss never reaches the backbone.
        vis_main, occ = None, {}
        if self.neck is not None:
            batches, targets = self._occlusion_batches(
                maps, neck_in, inputs, data_samples, occlusion)
            vis_preds, occ = self._neck_loss(batches, targets, maps.shape[-1])
            vis_main = vis_preds[0]

        if gv != 'none':
            emb, norm = self.backbone.embed(
                last, self._global_vis_train(vis_main, data_samples))

        margin = self.head.loss(emb, norm, labels)
        # Named after the margin head: loss_adaface, loss_arcface, ...
        name = getattr(self.head, 'branch_name', 'adaface')
        losses[f'loss_{name}'] = w['adaface'] * margin['loss']
        losses[f'acc_{name}'] = margin['accuracy']

        if self.qaconv_head is not None:
            qa = self.qaconv_head.loss(maps, labels,
                                       self._qaconv_vis(vis_main, data_samples))
            parts = {k[5:]: v for k, v in qa.items() if k.startswith('loss_')}
            losses['loss_qaconv'] = w['qaconv'] * sum(parts.values())
            for name, value in parts.items():
                losses[f'qaconv_{name}'] = value.detach()  # logged, not summed
            for key, value in qa.items():
                if key.startswith('acc_'):
                    losses[f'acc_qaconv_{key[4:]}'] = value

        if 'loss' in occ:
            losses['loss_occlusion'] = w['occlusion'] * occ['loss']
        return losses

    def _labels(self, data_samples: Optional[List[DataSample]],
                device: torch.device) -> torch.Tensor:
        if not data_samples:
            raise DataFormatError('<batch>', 'loss mode needs data_samples',
                                  field='gt_label')
        labels = []
        for i, s in enumerate(data_samples):
            if 'gt_label' not in s:
                raise DataFormatError('<batch>', 'sample has no gt_label',
                                      record=i, field='gt_label')
            labels.append(s.gt_label.reshape(-1)[:1])
        return torch.cat(labels).to(device).long()

    def _trunk(self, inputs: torch.Tensor):
        """One pass of the convolutional trunk: the maps QAConv matches, the
        last stage's maps (for :meth:`IResNet.embed`) and the neck's input
        (the maps, the tuple of the stages it reads, or the image)."""
        if self._neck_reads == 'stages':
            stages = self.backbone.forward_stages(inputs)
            maps = stages[self.backbone.map_stage - 1]
            return maps, stages[-1], tuple(stages[s - 1]
                                           for s in self.neck.stages)
        maps, last = self.backbone.forward_maps(inputs)
        return maps, last, inputs if self._neck_reads == 'image' else maps

    def _neck_loss(self, batches, targets, grid: int):
        if self._neck_reads == 'stages':
            return self.neck.loss(batches, targets, grid_size=grid)
        if self._neck_reads == 'image':
            return self.neck.loss(batches, targets, out_size=int(grid))
        return self.neck.loss(batches, targets)

    def _neck_predict(self, neck_in, grid: int) -> torch.Tensor:
        """Visibility [B, 1, grid, grid] of the neck's input."""
        if self._neck_reads == 'stages':
            return self.neck(neck_in, grid_size=grid)
        if self._neck_reads == 'image':
            # int(): a traced (ONNX) shape is a tensor.
            return self.neck(neck_in, out_size=int(grid))
        return self.neck(neck_in)

    def predict_visibility(self, maps: torch.Tensor,
                           inputs: torch.Tensor) -> torch.Tensor:
        """The neck's visibility [B, 1, h, w] on the grid of ``maps``.

        Args:
            maps (Tensor): Backbone maps [B, C, h, w] (read by an
                ``OcclusionHead``).
            inputs (Tensor): The preprocessed images [B, 3, H, W] they came
                from (read by an ``OcclusionSegmenter``; a
                ``MultiScaleOcclusionHead`` reads the stages computed from them).

        Returns:
            Tensor: [B, 1, h, w] in [0, 1]; all ones without a neck.
        """
        return self._global_vis_test(maps, self._neck_input(maps, inputs))[0]

    def _neck_input(self, maps: torch.Tensor, inputs: torch.Tensor):
        """The neck's input for images whose QAConv maps are ``maps``."""
        if self._neck_reads == 'image':
            return inputs
        if self._neck_reads == 'stages':
            return self._trunk(inputs)[2]
        return maps

    def _occlusion_batches(
        self, maps: torch.Tensor, neck_in, inputs: torch.Tensor,
        data_samples: List[DataSample], occlusion: Optional[dict]
    ) -> Tuple[list, List[Optional[torch.Tensor]]]:
        """The occlusion head's inputs and targets: the main batch's detached
        neck input (targets with ``occ_on_main``) and the occlusion stream's
        (its masks, or with ``occ_target`` the feature damage of its occluders
        pasted on the main batch's faces)."""
        # True masks on the grid the neck learns on: its own (pixel-level heads),
        # the grid they were packed on (an image reader), or the maps'.
        size = getattr(self.neck, 'target_size', None) or (
            None if self._neck_reads == 'image' else maps.shape[-1])
        batches = [_detach(neck_in)]
        targets = [stack_gt_visibility(data_samples, size)
                   if self.train_cfg['occ_on_main'] else None]
        if occlusion is not None and occlusion.get('inputs') is not None:
            samples = occlusion.get('data_samples')
            if not samples or not any('gt_visibility' in s for s in samples):
                raise DataFormatError(
                    '<occlusion batch>', 'no sample carries gt_visibility',
                    field='gt_visibility')
            if self.train_cfg['occ_target'] == 'mask':
                # No backbone gradient is wanted from this batch: skip the graph.
                if self._neck_reads == 'image':
                    batches.append(occlusion['inputs'])
                else:
                    with torch.no_grad():
                        batches.append(self._trunk(occlusion['inputs'])[2])
                targets.append(stack_gt_visibility(samples, size))
            else:
                occ_in, target = self._damage_batch(
                    inputs, occlusion['inputs'], samples, size or maps.shape[-1])
                batches.append(occ_in)
                targets.append(target)
        return batches, targets

    @torch.no_grad()
    def _damage_batch(self, faces: torch.Tensor, occluded: torch.Tensor,
                      samples: List[DataSample], size: int):
        """The stream's occluders pasted on main-batch faces: the neck's input
        for the composites and their ``occ_target`` (``'damage'`` or
        ``'mask*damage'``) on a ``size`` grid."""
        n = occluded.shape[0]
        base = faces[torch.arange(n, device=faces.device) % faces.shape[0]]
        pixels = stack_gt_visibility(samples, occluded.shape[-1]).to(
            occluded.device)
        composite = paste_occluders(base, occluded, pixels)
        # One forward of both: the same BatchNorm statistics for clean and pasted.
        maps, _, neck_in = self._trunk(torch.cat([base, composite]))
        clean, pasted = maps.split(n)
        damage = damage_visibility(clean, pasted, pixels)
        target = resize_visibility(damage, size)
        if self.train_cfg['occ_target'] == 'mask*damage':
            target = target * resize_visibility(pixels, size)
        return _detach(neck_in, start=n), target

    def _global_vis_train(self, vis_pred: Optional[torch.Tensor],
                          data_samples: List[DataSample]
                          ) -> Optional[torch.Tensor]:
        """The weight of the embedding's cells in training (None: unweighted).

        True masks carry no gradient and the prediction is detached: the global
        branch trains the backbone and the margin head, never the occlusion head.
        """
        mode = self.train_cfg['global_vis']
        if mode in ('gt', 'gt_or_pred'):
            gt = stack_gt_visibility(data_samples)
            if gt is not None:
                return gt.to(self.data_preprocessor.device)
            if mode == 'gt':
                return None  # no masks: every face counts as fully visible
        if vis_pred is None:
            return None
        return self.calibrate_visibility(vis_pred.detach())

    def _global_vis_test(self, maps: torch.Tensor, neck_in=None
                         ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Predicted visibility [B, 1, h, w] on the grid of maps, and the
        embedding's weight (None when ``test_cfg.global_vis`` is off or there is
        no occlusion head). ``neck_in``: the neck's input (None: the maps)."""
        if self.neck is None:
            # No occlusion head (e.g. removed by FaceRecognizer for a checkpoint
            # without one): all visible, the plain embedding.
            return maps.new_ones(maps.shape[0], 1, *maps.shape[-2:]), None
        vis = self._neck_predict(maps if neck_in is None else neck_in,
                                 maps.shape[-1])
        if not self.test_cfg['global_vis']:
            return vis, None
        return vis, self.calibrate_visibility(vis)

    def _qaconv_vis(self, vis_pred: Optional[torch.Tensor],
                    data_samples: List[DataSample]) -> Optional[torch.Tensor]:
        mode = self.train_cfg['qaconv_train_vis']
        if mode == 'pred':
            return vis_pred
        if mode == 'gt':
            size = self.qaconv_head.feat_size
            gt = stack_gt_visibility(data_samples, size)
            return None if gt is None else gt.to(self.data_preprocessor.device)
        return None

    # ------------------------------------------------------------- inference
    def extract(self,
                inputs: torch.Tensor,
                flip_test: Optional[bool] = None,
                return_feature_maps: Optional[bool] = None,
                half_maps: Optional[bool] = None) -> Dict[str, torch.Tensor]:
        """Embeddings, norms, visibility and (optionally) feature maps of a batch.

        Arguments left None take their value from ``test_cfg``.

        Args:
            inputs (Tensor): Preprocessed images [B, 3, H, W].
            flip_test (bool, optional): Fuse with the mirrored image:
                ``normalise(emb*norm + emb_flip*norm_flip)``.
            return_feature_maps (bool, optional): Add ``feature_map`` [B, C, h, w]
                (L2-normalised over channels, from the unflipped image).
            half_maps (bool, optional): Return the maps in fp16.

        Returns:
            dict: ``embedding`` [B, D] (unit), ``norm`` [B, 1], ``visibility``
            [B, 1, h, w] and optionally ``feature_map``.
        """
        cfg = self.test_cfg
        flip_test = cfg['flip_test'] if flip_test is None else flip_test
        if return_feature_maps is None:
            return_feature_maps = cfg['return_feature_maps']
        half_maps = cfg['half_maps'] if half_maps is None else half_maps
        maps, emb, norm, vis = self._embed_view(inputs)
        if flip_test:
            # Each view weighted by its own predicted visibility.
            _, emb_f, norm_f, _ = self._embed_view(inputs.flip(3), False)
            raw = emb * norm + emb_f * norm_f
            norm = raw.norm(dim=1, keepdim=True)
            emb = raw / norm.clamp_min(1e-12)
        out = dict(embedding=emb, norm=norm, visibility=vis)
        if return_feature_maps:
            fm = normalize_maps(maps)
            out['feature_map'] = fm.half() if half_maps else fm
        return out

    def _embed_view(self, inputs: torch.Tensor, with_vis: bool = True):
        """maps, embedding, norm and predicted visibility (None unless
        ``with_vis`` or needed for the embedding) of one view."""
        needs_vis = with_vis or self.test_cfg['global_vis']
        if self._neck_reads != 'stages' and not self.test_cfg['global_vis'] \
                or self.neck is None or not needs_vis:
            maps, emb, norm = self.backbone(inputs)
            vis = self._global_vis_test(
                maps, inputs if self._neck_reads == 'image' else None
            )[0] if with_vis else None
            return maps, emb, norm, vis
        maps, last, neck_in = self._trunk(inputs)
        vis, weight = self._global_vis_test(maps, neck_in)
        emb, norm = self.backbone.embed(last, weight)
        return maps, emb, norm, vis

    def predict(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None
                ) -> List[DataSample]:
        """One DataSample per image with ``embedding``, ``norm``, ``visibility``
        and, if ``test_cfg['return_feature_maps']``, ``feature_map``."""
        feats = self.extract(inputs)
        if data_samples is None:
            data_samples = [DataSample() for _ in range(inputs.shape[0])]
        for i, sample in enumerate(data_samples):
            for key, value in feats.items():
                sample.set_field(value[i].detach(), key, field_type='data')
        return data_samples

    def _require_qaconv(self):
        if self.qaconv_head is None:
            raise ConfigError(
                'this model has no QAConv branch (qaconv_head=None): QAConv '
                'scores are not available; evaluate the adaface branch only')
        return self.qaconv_head

    def match(self,
              probe_maps: torch.Tensor,
              gallery_maps: torch.Tensor,
              probe_vis: Optional[torch.Tensor] = None,
              gallery_vis: Optional[torch.Tensor] = None,
              calibrated: bool = False) -> torch.Tensor:
        """QAConv scores [P, G]; see :meth:`QAConvHead.match`
        (``calibrated``: the maps went through :meth:`calibrate_visibility`
        already, e.g. templates pooled from calibrated maps)."""
        return self._require_qaconv().match(probe_maps, gallery_maps,
                                            probe_vis, gallery_vis,
                                            calibrated=calibrated)

    def match_pairs(self,
                    maps_a: torch.Tensor,
                    maps_b: torch.Tensor,
                    vis_a: Optional[torch.Tensor] = None,
                    vis_b: Optional[torch.Tensor] = None,
                    calibrated: bool = False) -> torch.Tensor:
        """QAConv scores of row-wise pairs [N]; see :meth:`QAConvHead.match_pairs`
        (``calibrated`` as in :meth:`match`)."""
        return self._require_qaconv().match_pairs(maps_a, maps_b, vis_a, vis_b,
                                                  calibrated=calibrated)


def _detach(x, start: int = 0):
    """A tensor, or a tuple of tensors, detached (rows from ``start`` on)."""
    if isinstance(x, torch.Tensor):
        return x[start:].detach()
    return tuple(t[start:].detach() for t in x)
