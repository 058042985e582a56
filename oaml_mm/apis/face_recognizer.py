"""FaceRecognizer: a trained OAML model behind a small Python API.

Modelled on mmpretrain's ``apis`` inferencers (build from a config and a checkpoint,
call on images), specialised for face verification: ``extract`` returns what the model
predicts for each face (embedding, norm, 7x7 visibility, optionally channel-normalised
feature maps); ``compare`` scores a pair with the AdaFace cosine, the occlusion-aware
QAConv matcher of the model and the fused score of the evaluation layer, and decides
same/different at the threshold :class:`~oaml_mm.engine.hooks.ThresholdCalibrationHook`
stored in the checkpoint (or one the user gives). A checkpoint calibrated with a
visibility-aware fusion (docs/evaluation.md, "Visibility-aware fusion") also gives
the ``fused_vis`` score, which then decides by default.

Nothing here re-implements model math: alignment is the data layer's, matching the
model's (``OAMLRecognizer.match`` / ``match_pairs``), fusion the evaluation layer's
(:func:`~oaml_mm.evaluation.functional.fuse_scores`).
"""
import math
import os
import os.path as osp
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import DefaultScope

from oaml_mm.errors import CheckpointError, ConfigError, ImageInputError
from oaml_mm.evaluation.functional import (BRANCHES, DECISION_BRANCHES,
                                           FUSED_VIS, THRESHOLDS_META_KEY,
                                           VIS_FUSION_KEY,
                                           apply_visibility_fusion,
                                           check_visibility_fusion,
                                           fuse_scores, fusion_mean_visibility)
from oaml_mm.models.heads import without_sharded_head
from oaml_mm.models.utils import (calibration_settings_problem,
                                  embedding_settings, inference_model)
from oaml_mm.registry import MODELS
from oaml_mm.utils import find_run_config, load_config, safe_load_checkpoint
from oaml_mm.utils.checkpoint import (fill_batchnorm_counters,
                                      resolve_last_checkpoint,
                                      state_dict_mismatch)
from .face_finder import prepare_photos
from .inputs import ImageLike

__all__ = ['FaceRecognizer', 'BRANCHES', 'BRANCH_UNITS']

#: What each branch's score (and so its threshold) measures.
BRANCH_UNITS = {
    'adaface': 'cosine similarity',
    'qaconv': 'QAConv score',
    'fused': 'fused z-score',
    FUSED_VIS: 'log-odds of the visibility-aware fusion',
}
#: Model parts a checkpoint may lack. The margin head only serves the training
#: loss; the occlusion head and the QAConv head only add the QAConv branch (and
#: the visibility maps), so a backbone alone still embeds.
_OPTIONAL_PARTS = {
    'head': 'margin head (training only)',
    'neck': 'occlusion head',
    'qaconv_head': 'QAConv head',
}


def _strip_prefix(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    # A checkpoint saved from a DDP-wrapped model prefixes every key with 'module.'.
    if state and all(k.startswith('module.') for k in state):
        return {k[len('module.'):]: v for k, v in state.items()}
    return state


def _checked_device(device: Union[str, torch.device]) -> torch.device:
    """``torch.device(device)``, refused in one line when it is not there."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f'device {device!r}: {e}') from None
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise ConfigError(f'device {device!r}: CUDA is not available on this '
                          "machine (torch.cuda.is_available() is False); use "
                          "device='cpu' (--device cpu)")
    if dev.type == 'cuda' and dev.index is not None and \
            dev.index >= torch.cuda.device_count():
        raise ConfigError(f'device {device!r}: this machine has '
                          f'{torch.cuda.device_count()} CUDA device(s)')
    return dev


class FaceRecognizer:
    """Embed, compare and explain faces with a trained OAML checkpoint.

    Examples::

        from oaml_mm.apis import FaceRecognizer
        rec = FaceRecognizer('configs/synthface/oaml_ir18_synthface.py',
                             'work_dirs/demo/epoch_4.pth')
        rec = FaceRecognizer.from_work_dir('work_dirs/demo')   # last checkpoint
        out = rec.compare('a.jpg', 'b.jpg')
        out['scores']['fused'], out['same']
        feats = rec.extract(['a.jpg', 'b.jpg'], return_feature_maps=True)
        # unaligned images: give the 5 landmarks (eyes, nose, mouth corners)
        feats = rec.extract(frame_bgr, channel_order='bgr', landmarks=[pts])

    Args:
        config (str | Config | dict): Model config (a file, a loaded config, or the
            ``model`` dict itself).
        checkpoint (str, optional): Checkpoint to load (weights-only). None keeps
            the initial weights (tests only).
        device (str): Where the model runs. Defaults to ``'cpu'``.
        thresholds (dict, optional): ``{branch: threshold}`` overriding the
            calibrated ones, each in its branch's unit (:data:`BRANCH_UNITS`).
        decision_branch (str, optional): Branch that decides same/different.
            Defaults to the calibrated one when the model can give it (the
            visibility-aware ``'fused_vis'`` when the calibration fitted one,
            else ``'fused'``), else ``'fused'`` when available, else
            ``'adaface'``.
            Naming a branch the model cannot give raises :class:`ConfigError`.
        batch_size (int): Images per forward pass in :meth:`extract`. Defaults to 64.
        backend (str): ``'pytorch'`` (default: BatchNorm-folded, channels-last
            model) or ``'onnxruntime'`` (CPU; the model's graph exported to ONNX
            when first used, the flip test applied as in PyTorch; needs
            ``onnxruntime`` and ``onnx``). Both give the same features to float32
            rounding; docs/inference.md, "ONNX export".

    A checkpoint needs only the parts inference uses: the backbone always; the
    occlusion head and the QAConv head where it has them. A backbone-only file
    (``tools/model_converters/insightface2oaml.py``, ``adaface2oaml.py
    --backbone-only``) loads with a log line naming what is absent
    (:attr:`absent_parts`); without the QAConv head or the occlusion head the
    QAConv and fused branches are unavailable (:meth:`available_branches`) and
    ``visibility`` is all ones.

    Raises:
        CheckpointError: The checkpoint is damaged (a zip member fails its
            CRC-32: :func:`~oaml_mm.utils.checkpoint.check_checkpoint_file`),
            lacks backbone weights, has keys the model does not, or shapes that
            differ; or its visibility fusion parameters are malformed (the
            message names the field). Missing BatchNorm ``num_batches_tracked``
            counters are filled in, and a config without the margin head skips
            the checkpoint's ``head.*`` keys.
        ConfigError: A threshold or decision branch names a branch the model
            cannot give, or ``device`` is not on this machine (``'cuda'``
            without CUDA).
    """

    #: How photos become crops (None: a shared default FaceFinder).
    face_finder = None

    def __init__(self,
                 config: Union[str, Config, dict],
                 checkpoint: Optional[str] = None,
                 device: Union[str, torch.device] = 'cpu',
                 thresholds: Optional[Dict[str, float]] = None,
                 decision_branch: Optional[str] = None,
                 batch_size: int = 64,
                 backend: str = 'pytorch') -> None:
        # Before anything is built or read: a device that is not there.
        device = _checked_device(device)
        cfg = load_config(str(config)) if isinstance(
            config, (str, os.PathLike)) else config
        model_cfg = cfg.get('model', None) if 'backbone' not in cfg else cfg
        if model_cfg is None:
            raise ConfigError(f'{config}: the config has no model section')
        # Configs name oaml_mm types without a prefix: build in our scope
        # whatever scope the caller's process has set.
        # A sharded margin head (training only) is not built: in one process
        # it would hold every class centre.
        model_cfg = without_sharded_head(model_cfg.to_dict() if hasattr(
            model_cfg, 'to_dict') else model_cfg)
        with DefaultScope.overwrite_default_scope('oaml_mm'):
            self.model = MODELS.build(model_cfg)
        self.checkpoint_path = checkpoint
        self.meta: dict = {}
        #: Optional parts (``'neck'``, ``'qaconv_head'``, ``'head'``) the
        #: checkpoint did not hold; the model runs without them.
        self.absent_parts: list = []
        if checkpoint is not None:
            self._load(checkpoint)
        self.device = device
        self.model.to(self.device).eval()
        self.input_size = int(getattr(self.model.backbone, 'feat_size', 7)) * 16
        self.batch_size = int(batch_size)
        if backend not in ('pytorch', 'onnxruntime'):
            raise ConfigError(f"backend must be 'pytorch' or 'onnxruntime', got "
                              f'{backend!r}')
        if backend == 'onnxruntime' and self.device.type != 'cpu':
            raise ConfigError('backend="onnxruntime" runs on the CPU; use '
                              'device="cpu" or backend="pytorch"')
        self.backend = backend
        self._ort = None
        self.calibration: dict = dict(self.meta.get(THRESHOLDS_META_KEY) or {})
        if self.calibration.get(VIS_FUSION_KEY) is not None:
            try:
                check_visibility_fusion(
                    self.calibration[VIS_FUSION_KEY],
                    f"{checkpoint}: meta['{THRESHOLDS_META_KEY}']"
                    f"['{VIS_FUSION_KEY}']")
            except ConfigError as e:
                raise CheckpointError(str(e)) from e
        #: Why the stored calibration is not used (None when it is): made
        #: under other settings, it is dropped whole (thresholds, fuse_stats,
        #: vis_fusion) and the model scores as an uncalibrated one.
        self.calibration_problem: Optional[str] = self._calibration_problem(
            checkpoint)
        #: The stored calibration that was dropped ({} when none was).
        self.rejected_calibration: dict = {}
        if self.calibration_problem:
            self.rejected_calibration, self.calibration = self.calibration, {}
        #: The visibility-aware fusion of the calibration (None without one).
        self.vis_fusion: Optional[dict] = self.calibration.get(VIS_FUSION_KEY)
        self.has_qaconv = getattr(self.model, 'qaconv_head', None) is not None
        available = self.available_branches()
        self.thresholds: Dict[str, float] = {
            b: float(v['threshold'])
            for b, v in self.calibration.get('branches', {}).items()
            if b in available}
        for b, v in (thresholds or {}).items():
            self._check_branch(b, 'thresholds')
            if not math.isfinite(float(v)):
                raise ConfigError(f'thresholds[{b!r}] must be a finite number, '
                                  f'got {v!r}')
            self.thresholds[b] = float(v)
        #: Whether the deciding branch was asked for (``decision_branch``).
        self.decision_branch_given = decision_branch is not None
        if decision_branch is None:
            calibrated = self.calibration.get('decision_branch')
            # Uncalibrated: the cosine, whose scale users know.
            decision_branch = calibrated if calibrated in available else (
                'fused' if 'fused' in available else 'adaface')
        self._check_branch(decision_branch, 'decision_branch / --branch')
        self.decision_branch = decision_branch

    @classmethod
    def load(cls,
             config: Optional[str] = None,
             checkpoint: Optional[str] = None,
             work_dir: Optional[str] = None,
             **kwargs) -> 'FaceRecognizer':
        """Build from a config and checkpoint, or from a training work dir.

        What ``tools/infer.py``'s ``--config`` / ``--checkpoint`` /
        ``--work-dir`` mean: with ``work_dir``, :meth:`from_work_dir` (a given
        ``checkpoint`` replaces the run's last one; ``config`` is not used);
        else both ``config`` and ``checkpoint`` are needed.

        Args:
            config (str, optional): Model config file.
            checkpoint (str, optional): Checkpoint file.
            work_dir (str, optional): A ``tools/train.py`` work dir.
            **kwargs: Passed to the constructor (``device``, ``thresholds``,
                ``decision_branch`` ...).

        Returns:
            FaceRecognizer: The loaded recognizer.

        Raises:
            ConfigError: Neither ``work_dir`` nor both ``config`` and
                ``checkpoint``; and as the constructor and
                :meth:`from_work_dir`.
        """
        if work_dir:
            return cls.from_work_dir(work_dir, checkpoint, **kwargs)
        if not config or not checkpoint:
            raise ConfigError('give --config and --checkpoint, or --work-dir')
        return cls(config, checkpoint, **kwargs)

    @classmethod
    def from_work_dir(cls, work_dir: str, checkpoint: Optional[str] = None,
                      **kwargs) -> 'FaceRecognizer':
        """Build from a training work dir: its dumped config and last checkpoint.

        Args:
            work_dir (str): The ``--work-dir`` of ``tools/train.py``.
            checkpoint (str, optional): A checkpoint file to use instead of the one
                ``last_checkpoint`` names.
            **kwargs: Passed to the constructor.

        ``last_checkpoint`` holds the absolute path training wrote. The work
        dir's own file of that name is used whenever it exists, so a copied or
        moved run folder embeds with its own weights, never with whatever sits
        at the original place now
        (:func:`~oaml_mm.utils.checkpoint.resolve_last_checkpoint`).

        The config is the one the training run dumped, as the checkpoint's
        meta names it (:func:`~oaml_mm.utils.find_run_config`), not the newest
        ``*.py``: a later ``tools/test.py`` dumps its own config beside it.

        Raises:
            CheckpointError: No ``last_checkpoint``, or it names a file outside
                the work dir that has no copy in it.
            ConfigError: No ``*.py`` in the work dir, or several building
                different models and none named by the checkpoint.
        """
        work_dir = str(work_dir)
        if checkpoint is None:
            if not osp.isfile(osp.join(work_dir, 'last_checkpoint')):
                raise CheckpointError(
                    f'{work_dir}: no last_checkpoint file (has training saved a '
                    'checkpoint there?)')
            # A copied or moved work dir uses its own file of that name.
            checkpoint, note = resolve_last_checkpoint(work_dir)
            if checkpoint is None:
                raise CheckpointError(
                    (note or f'{work_dir}: last_checkpoint is empty')
                    + '; pass --checkpoint (checkpoint=) to choose one')
        # The config the run dumped, which the checkpoint's meta names; not
        # the newest *.py (a later tools/test.py dumps its own beside it).
        return cls(find_run_config(work_dir, checkpoint), checkpoint, **kwargs)

    def _load(self, path: str) -> None:
        ckpt = safe_load_checkpoint(path)
        state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict) or not all(
                isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f'{path}: holds no state_dict of tensors')
        own = self.model.state_dict()
        # Files from before torch 0.4.1 or converted from MXNet have no
        # BatchNorm counters; inference does not read them.
        state = fill_batchnorm_counters(_strip_prefix(state), own)
        if getattr(self.model, 'head', None) is None:
            # An inference config without the training-only margin head.
            state = {k: v for k, v in state.items()
                     if not k.startswith('head.')}
        missing = set(own) - set(state)
        absent = []
        for part in _OPTIONAL_PARTS:
            keys = {k for k in own if k.startswith(part + '.')}
            # Only a part missing as a whole is optional: half a part is damage.
            if keys and keys <= missing and not any(
                    k.startswith(part + '.') for k in state):
                absent.append(part)
        expected = {k: v for k, v in own.items()
                    if k.split('.', 1)[0] not in absent}
        problems = state_dict_mismatch(state, expected)
        if problems:
            raise CheckpointError(
                f'{path}: the checkpoint does not match the model of the config; '
                + problems)
        if absent:
            dropped = self._drop_parts(path, absent)
            # A QAConv head left without its occlusion head is dropped too:
            # its weights have no place in the model any more.
            state = {k: v for k, v in state.items()
                     if k.split('.', 1)[0] not in dropped}
        self.model.load_state_dict(state, strict=True)
        meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
        self.meta = meta if isinstance(meta, dict) else {}

    def _drop_parts(self, path: str, absent: Sequence[str]) -> set:
        """Run without the optional parts the checkpoint lacks, and say so.

        Their initial weights would give made-up visibility maps and QAConv
        scores, so the parts are removed: ``extract`` then returns all-ones
        visibility and the QAConv branch is unavailable. QAConv of a model
        trained with an occlusion head is also unavailable without that head:
        its scores would not be the model's.

        Returns:
            set: The parts removed from the model (``absent`` plus a QAConv
            head without its occlusion head).
        """
        absent = list(absent)
        dropped = set(absent)
        if 'neck' in absent and getattr(self.model, 'qaconv_head',
                                        None) is not None:
            dropped.add('qaconv_head')
        for part in dropped:
            setattr(self.model, part, None)
        self.absent_parts = absent
        names = ', '.join(_OPTIONAL_PARTS[p] for p in absent)
        qaconv = '' if self.model.qaconv_head is not None or not (
            {'neck', 'qaconv_head'} & set(absent)) else \
            '; the QAConv and fused branches are unavailable'
        print_log(f'{path}: no {names} in the checkpoint; embedding with the '
                  f'parts it holds{qaconv}', logger='current')
        return dropped

    def available_branches(self) -> tuple:
        """Branches this model and checkpoint can score.

        ``adaface`` always; ``qaconv`` with a QAConv head (and the occlusion
        head of a model configured with one); ``fused`` also needs the impostor
        statistics of a calibration (``ThresholdCalibrationHook``); ``fused_vis``
        a calibration that fitted the visibility-aware fusion.
        """
        out = ['adaface']
        if self.has_qaconv:
            out.append('qaconv')
            stats = self.calibration.get('fuse_stats') or {}
            if 'adaface' in stats and 'qaconv' in stats:
                out.append('fused')
            if self.vis_fusion is not None:
                out.append(FUSED_VIS)
        return tuple(out)

    def _check_branch(self, branch: str, what: str) -> None:
        if branch not in DECISION_BRANCHES:
            raise ConfigError(f'{what}: branch must be one of '
                              f'{DECISION_BRANCHES}, got {branch!r}')
        if branch not in self.available_branches():
            why = {
                'qaconv': 'the model has no QAConv head'
                + (f' (absent from {self.checkpoint_path})'
                   if {'neck', 'qaconv_head'} & set(self.absent_parts) else ''),
                'fused': ('the model has no QAConv head' if not self.has_qaconv
                          else 'the checkpoint holds no calibration '
                          '(ThresholdCalibrationHook) to put the two branches '
                          'on one scale'),
                FUSED_VIS: ('the model has no QAConv head' if not self.has_qaconv
                            else 'the checkpoint\'s calibration fitted no '
                            'visibility-aware fusion (no occlusion head, or '
                            'calibrated before it existed)'),
            }[branch]
            if branch in ('fused', FUSED_VIS) and self.calibration_problem:
                why = self.calibration_problem
            raise ConfigError(
                f'the {branch} branch ({what}) is one this model cannot give: '
                f'{why}; available: {", ".join(self.available_branches())}')

    # ------------------------------------------------------------ extraction
    def prepare(self, images: Union[ImageLike, Sequence[ImageLike]],
                channel_order: Optional[str] = None,
                landmarks=None,
                boxes=None,
                return_reports: bool = False):
        """Aligned RGB uint8 crops [B, 3, S, S] of crops or unaligned photos.

        Photos without landmarks go through face detection; see
        :func:`~oaml_mm.apis.face_finder.prepare_photos` (set ``face_finder`` to a
        :class:`~oaml_mm.apis.FaceFinder` to change how). With
        ``return_reports`` the per-face reports (path taken, detector score,
        box, landmarks) come second.
        """
        crops, reports = prepare_photos(images, channel_order, landmarks,
                                        self.input_size, self.face_finder, boxes)
        return (crops, reports) if return_reports else crops

    @torch.no_grad()
    def extract(self,
                images: Union[ImageLike, Sequence[ImageLike]],
                channel_order: Optional[str] = None,
                landmarks=None,
                return_feature_maps: bool = False,
                batch_size: Optional[int] = None) -> Dict[str, torch.Tensor]:
        """Embeddings, norms, visibility maps (and feature maps) of faces.

        Args:
            images: A path, array, tensor or a list of them (see
                :func:`~oaml_mm.apis.inputs.prepare_faces`), or crops
                :meth:`prepare` returned (a uint8 tensor [B, 3, S, S]).
            channel_order (str, optional): ``'rgb'``/``'bgr'`` of arrays/tensors.
            landmarks: Per-image 5 landmarks for unaligned images.
            return_feature_maps (bool): Add ``feature_map`` [B, C, h, w]
                (L2-normalised over channels, fp32).
            batch_size (int, optional): Images per forward pass.

        Returns:
            dict: CPU tensors ``embedding`` [B, D] (unit), ``norm`` [B, 1],
            ``visibility`` [B, 1, h, w] (all ones without an occlusion head)
            and optionally ``feature_map``.

        Raises:
            ImageInputError: See :func:`~oaml_mm.apis.inputs.prepare_faces`;
                among others a float image in [0, 1] (pixels must be 0..255).
        """
        if isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and \
                images.dim() == 4 and landmarks is None and \
                channel_order in (None, 'rgb'):
            crops = images
            if crops.shape[-2:] != (self.input_size, self.input_size):
                raise ImageInputError(
                    f'crops of {tuple(crops.shape[-2:])} are not aligned '
                    f'{self.input_size}x{self.input_size} faces; pass landmarks')
        else:
            crops = self.prepare(images, channel_order, landmarks)
        bs = int(batch_size or self.batch_size)
        parts = []
        if self.backend == 'onnxruntime':
            if self._ort is None:
                from .onnx_backend import OnnxRuntimeExtractor
                self._ort = OnnxRuntimeExtractor(self.model, self.input_size)
            for s in range(0, crops.shape[0], bs):
                parts.append(self._ort(crops[s:s + bs], return_feature_maps))
            return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        model = self._inference_model()
        for s in range(0, crops.shape[0], bs):
            x = model.data_preprocessor.normalize(crops[s:s + bs])
            out = model.extract(
                x, return_feature_maps=return_feature_maps, half_maps=False)
            parts.append({k: v.float().cpu() for k, v in out.items()})
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _inference_model(self):
        """``self.model`` with BatchNorms folded (+ channels-last on a CPU).

        1.2-1.8x the eager model's images/s on a CPU, same outputs to float32
        rounding (``docs/benchmarks.md``, "5. Inference"). Rebuilt whenever
        ``self.model`` or any of its tensors changed since the last build.
        """
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        key = (id(self.model), sum(t._version for t in tensors),
               tuple(id(t) for t in tensors))
        if getattr(self, '_fast_key', None) != key:
            self._fast = inference_model(self.model,
                                         channels_last=self.device.type == 'cpu')
            self._fast_key = key
        return self._fast

    # -------------------------------------------------------------- scoring
    def score_pairs(self, feats_a: Dict[str, torch.Tensor],
                    feats_b: Dict[str, torch.Tensor]) -> Dict[str, np.ndarray]:
        """Branch scores of the row-wise pairs of two :meth:`extract` results.

        Args:
            feats_a (dict): Features of the first images (with ``feature_map`` for
                the QAConv branch).
            feats_b (dict): Features of the second images, same length.

        Returns:
            dict: ``adaface`` (cosine) and, when the model has QAConv and the maps
            are there, ``qaconv``, (with a calibration) ``fused`` and (with a
            fitted visibility fusion, :data:`BRANCH_UNITS`) ``fused_vis``, from
            both faces' mean visibility on the map the fusion was fitted on
            (the prediction calibrated by its recorded ``vis_range``: the
            model's, or the raw map for a calibration written before it was
            recorded); ``[N]`` each.
        """
        cos = (feats_a['embedding'] * feats_b['embedding']).sum(1)
        out = {'adaface': cos.double().numpy()}
        if self.has_qaconv and 'feature_map' in feats_a and \
                'feature_map' in feats_b:
            with torch.no_grad():
                q = self.model.match_pairs(
                    feats_a['feature_map'].to(self.device),
                    feats_b['feature_map'].to(self.device),
                    feats_a['visibility'].to(self.device),
                    feats_b['visibility'].to(self.device))
            out['qaconv'] = q.double().cpu().numpy()
            fused = self.fuse(out['adaface'], out['qaconv'])
            if fused is not None:
                out['fused'] = fused
            if self.vis_fusion is not None:
                out[FUSED_VIS] = apply_visibility_fusion(
                    self.vis_fusion, out['adaface'], out['qaconv'],
                    fusion_mean_visibility(self.vis_fusion,
                                           feats_a['visibility']),
                    fusion_mean_visibility(self.vis_fusion,
                                           feats_b['visibility']))
        return out

    def fuse(self, adaface: np.ndarray,
             qaconv: np.ndarray) -> Optional[np.ndarray]:
        """The evaluation layer's fused score with the calibrated statistics.

        Returns None when the checkpoint carries no calibration: the impostor
        statistics that put the two branches on one scale are unknown then.
        """
        stats = self.calibration.get('fuse_stats') or {}
        if 'adaface' not in stats or 'qaconv' not in stats:
            return None
        weights = self.calibration.get('fuse_weights', (0.5, 0.5))
        return fuse_scores([adaface, qaconv], weights,
                           [tuple(stats['adaface']), tuple(stats['qaconv'])])

    def compare(self,
                img_a: ImageLike,
                img_b: ImageLike,
                channel_order: Optional[str] = None,
                landmarks_a=None,
                landmarks_b=None,
                threshold: Optional[float] = None,
                return_features: bool = False,
                branch: Optional[str] = None) -> dict:
        """Score two faces and decide whether they are the same person.

        Args:
            img_a, img_b: One image each (path, array, tensor).
            channel_order (str, optional): ``'rgb'``/``'bgr'`` of arrays/tensors.
            landmarks_a, landmarks_b: 5 landmarks of unaligned images.
            threshold (float, optional): Threshold of the deciding branch, in its
                unit (:data:`BRANCH_UNITS`); overrides the calibrated one.
            return_features (bool): Add ``features`` (both images' extract dicts).
            branch (str, optional): The deciding branch for this call; defaults
                to :attr:`decision_branch`.

        Returns:
            dict: ``scores`` ({branch: float}), ``branch`` (the deciding one),
            ``unit`` (what its score and threshold measure), ``threshold``
            (None when unknown), ``threshold_source`` (``'calibrated at FAR=..
            on ..'``, ``'given'`` or None), ``same`` (bool, or None without a
            threshold) and optionally ``features``.

        Raises:
            ConfigError: ``branch`` is one the model cannot give (no silent
                fallback to another branch with this threshold).
        """
        branch = self.decision_branch if branch is None else branch
        self._check_branch(branch, 'compare branch')
        feats = self.extract([img_a, img_b], channel_order,
                             None if landmarks_a is None and landmarks_b is None
                             else [landmarks_a, landmarks_b],
                             return_feature_maps=self.has_qaconv)
        fa = {k: v[:1] for k, v in feats.items()}
        fb = {k: v[1:] for k, v in feats.items()}
        scores = {k: float(v[0]) for k, v in self.score_pairs(fa, fb).items()}
        if threshold is not None:
            thr, source = float(threshold), 'given'
            if not math.isfinite(thr):
                # NaN compares False with everything: "DIFFERENT" every time.
                raise ConfigError(f'threshold must be a finite number, got '
                                  f'{threshold!r}')
        else:
            thr, source = self.thresholds.get(branch), self._source(branch)
        out = dict(scores=scores, branch=branch, unit=BRANCH_UNITS[branch],
                   threshold=None if thr is None else float(thr),
                   threshold_source=None if thr is None else source,
                   same=None if thr is None else bool(scores[branch] >= thr))
        if thr is None and self.calibration_problem:
            out['no_threshold_reason'] = self.calibration_problem
        if return_features:
            out['features'] = (fa, fb)
        return out

    def _calibration_problem(self, checkpoint: Optional[str]) -> Optional[str]:
        """Why the calibration does not hold for this model's settings, or None.

        See :func:`~oaml_mm.models.utils.calibration_settings_problem`; the
        reason is also logged as a warning.

        Raises:
            CheckpointError: The calibration contradicts itself.
        """
        problem = calibration_settings_problem(
            self.calibration, embedding_settings(self.model), str(checkpoint))
        if problem:
            print_log(problem, logger='current', level=30)
        return problem

    def _source(self, branch: str) -> str:
        """Where the stored threshold of ``branch`` comes from, for messages."""
        cal = self.calibration.get('branches', {}).get(branch)
        if cal is None or float(cal['threshold']) != self.thresholds.get(branch):
            return 'given'
        where = self.calibration.get('source') or 'validation pairs'
        return f'calibrated at FAR={float(self.calibration["far"]):g} on {where}'
