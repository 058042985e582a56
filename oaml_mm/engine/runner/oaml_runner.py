"""The oaml_mm runner: mmengine's Runner with safe checkpoints and CPU DDP.

Differences from :class:`mmengine.runner.Runner`:

* checkpoints are written atomically and load with ``torch.load(weights_only=True)``
  (it adds :class:`~oaml_mm.engine.hooks.SafeCheckpointHook`);
* ``--resume`` restores the random generator states, so the resumed losses equal those
  of an uninterrupted run, for iteration loops too (``OAMLIterBasedTrainLoop``
  replaces ``IterBasedTrainLoop``); it first checks that the checkpoint fits the
  model and optimizer (:func:`~oaml_mm.engine.runner.check_resume_fit`);
* one training run per work directory (:class:`~oaml_mm.engine.runner.WorkDirLock`,
  held by rank 0 for the duration of ``train()``; ``tools/train.py`` takes it before
  the runner is built and hands it over as ``work_dir_lock``, so a refused run
  writes nothing into the folder);
* a training length that is not positive, or a DataLoader ``batch_size`` that differs
  from its PKSampler/GraphSampler's, is a :class:`~oaml_mm.errors.ConfigError` at the
  start of ``train()`` (:func:`~oaml_mm.engine.runner.check_train_config`;
  ``tools/train.py`` checks before the runner is built);
* distributed training works on CPU-only machines: the gloo process group is created
  here when CUDA is absent (mmengine's launcher assumes a GPU per process), and the
  model is wrapped without ``device_ids``;
* faults are reported before they cost a run (``docs/reliability.md``): the work
  directory is checked for write access when the runner is built and for room for a
  checkpoint before training; old checkpoints are pruned only after the new one is
  complete (:class:`~oaml_mm.engine.hooks.OAMLCheckpointHook`); ``--resume`` without a
  path verifies the checkpoint ``last_checkpoint`` names and, when it is damaged or
  missing, falls back to the verified one saved at the latest iteration; a
  :class:`~oaml_mm.errors.NonFiniteLossError`
  leaves ``nonfinite_iter_{N}.pth`` behind to inspect;
* parameters sharded over the ranks (``sharded_parameters()``, e.g.
  :class:`~oaml_mm.models.heads.PartialFCHead`) are left out of DDP, gathered
  whole (with their optimizer state) into each checkpoint and cut to each rank's
  slice when one is loaded, at any world size
  (:mod:`~oaml_mm.engine.runner.sharded_state`).

Select it in a config with ``runner_type = 'OAMLRunner'`` (the default runtime does).
The crash-consistency rules (write to a temporary file, fsync, rename; never delete
the old copy before the new one is durable; verify before trusting) are those of
database write-ahead logging, as used by fvcore's and torchelastic's checkpointers.
"""
import copy
import glob
import os
import os.path as osp
import re
import shutil
import tempfile
import zipfile
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import IterBasedTrainLoop, Runner
from mmengine.runner.checkpoint import (_load_checkpoint,
                                        _load_checkpoint_to_model)

from oaml_mm.engine.hooks.safe_checkpoint_hook import (SafeCheckpointHook,
                                                       set_rng_state)
from oaml_mm.errors import CheckpointError, NonFiniteLossError, WorkDirError
from oaml_mm.registry import RUNNERS
from oaml_mm.utils.checkpoint import (check_checkpoint_file,
                                      resolve_last_checkpoint,
                                      safe_load_checkpoint)
from .loops import OAMLIterBasedTrainLoop
from .resume_fit import check_resume_fit
from .sharded_state import (ddp_ignored_names, gather_sharded_state,
                            put_sharded_optimizer_state, release_sharded_state,
                            shard_optimizer_state)
from .train_cfg_check import check_dataloader_configs, check_train_config
from .work_dir_lock import WorkDirLock

__all__ = [
    'OAMLRunner', 'init_cpu_distributed', 'check_checkpoint_file',
    'find_resumable_checkpoint', 'check_work_dir'
]

#: The hooks ``mmengine.runner.Runner.register_default_hooks`` registers itself.
_MMENGINE_DEFAULT_HOOKS = frozenset(('runtime_info', 'timer', 'sampler_seed',
                                     'logger', 'param_scheduler', 'checkpoint'))

#: Names the checkpoint hook writes; only these are resume candidates (never the
#: ``*.tmp`` files of an interrupted write).
_CKPT_NAME = re.compile(r'^(?:epoch|iter)_(\d+)\.pth$')
_TMP_GLOB = '*.pth.*.tmp'
#: A checkpoint holds the weights and up to two optimizer moments per parameter.
_CKPT_SIZE_FACTOR = 3
_CKPT_SIZE_MARGIN = 1 << 20


def check_work_dir(work_dir: str, need_bytes: int = 0) -> None:
    """Fail early when ``work_dir`` cannot hold logs and checkpoints.

    Creates the folder, writes, fsyncs and removes a probe file in it, and compares
    the free space with ``need_bytes``.

    Args:
        work_dir (str): The run's work directory.
        need_bytes (int): Bytes one checkpoint needs; 0 skips the space check.

    Raises:
        WorkDirError: The folder cannot be created or written, or has too little
            free space.

    Examples:
        >>> check_work_dir('/proc/no_such_dir')  # doctest: +SKIP
        Traceback (most recent call last):
        ...
        oaml_mm.errors.WorkDirError: /proc/no_such_dir: cannot create ...
    """
    work_dir = str(work_dir)
    hint = 'choose another folder with --work-dir'
    try:
        os.makedirs(work_dir, exist_ok=True)
    except OSError as e:
        raise WorkDirError(f'{work_dir}: cannot create the work directory '
                           f'({e.strerror or e}); {hint}') from None
    probe = None
    try:
        fd, probe = tempfile.mkstemp(prefix='.oaml_write_probe.',
                                     dir=work_dir)
        with os.fdopen(fd, 'wb') as f:
            f.write(b'\0' * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise WorkDirError(f'{work_dir}: the work directory is not writable '
                           f'({e.strerror or e}); {hint}') from None
    finally:
        if probe is not None and osp.exists(probe):
            os.remove(probe)
    if need_bytes > 0:
        free = shutil.disk_usage(work_dir).free
        if free < need_bytes:
            raise WorkDirError(
                f'{work_dir}: {free / 2**20:.1f} MiB free, but a checkpoint of '
                f'this model needs about {need_bytes / 2**20:.1f} MiB; free '
                f'some space or {hint}')


def _progress_of(path: str) -> Tuple[int, float]:
    """``(iteration saved in meta, mtime)`` of a verified checkpoint.

    ``epoch_N`` and ``iter_N`` numbers count different things, so they are never
    compared; the global iteration count every mmengine checkpoint stores in
    ``meta['iter']`` is. That count must agree with the rest of the file: the
    number in an ``iter_N.pth`` name, the epoch in an ``epoch_N.pth`` name and
    the iteration of the message hub's runtime info (one less than
    ``meta['iter']``), so a file whose ``meta`` was edited cannot win "newest".
    The tensor data is memory-mapped, not read.

    Raises:
        CheckpointError: ``meta`` contradicts the file name or the message hub.
    """
    ckpt = safe_load_checkpoint(path, decode=False, verify=False,
                                mmap=zipfile.is_zipfile(path))
    meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
    meta = meta if isinstance(meta, dict) else {}
    it = meta.get('iter', -1)
    it = it if isinstance(it, int) and not isinstance(it, bool) else -1
    m = _CKPT_NAME.match(osp.basename(path))
    number = int(m.group(1)) if m else None
    kind = osp.basename(path).split('_', 1)[0]
    said = {'iter': it, 'epoch': meta.get('epoch')}.get(kind)
    if number is not None and said != number:
        raise CheckpointError(
            f"{path}: meta['{kind}'] is {said!r} but the file name says "
            f'{number}; the checkpoint was edited or renamed, so its progress '
            'cannot be trusted')
    hub = ckpt.get('message_hub') if isinstance(ckpt, dict) else None
    info = hub.get('runtime_info') if isinstance(hub, dict) else None
    hub_iter = info.get('iter') if isinstance(info, dict) else None
    if isinstance(hub_iter, int) and it >= 0 and hub_iter + 1 != it:
        raise CheckpointError(
            f"{path}: meta['iter'] is {it} but the message hub was saved at "
            f'iteration {hub_iter + 1}; the checkpoint was edited, so its '
            'progress cannot be trusted')
    return it, osp.getmtime(path)


def find_resumable_checkpoint(work_dir: str) -> Tuple[Optional[str], List[str]]:
    """The checkpoint ``--resume`` (without a path) continues from.

    The file named in ``work_dir/last_checkpoint``
    (:func:`~oaml_mm.utils.checkpoint.resolve_last_checkpoint`: the work dir's own
    file of that name first, so a copied or moved work dir resumes from its own
    weights, never from the original place) if it verifies
    (:func:`check_checkpoint_file`). Otherwise every ``epoch_N.pth``/``iter_N.pth``
    in ``work_dir`` is verified and the one saved at the latest training iteration
    (``meta['iter']``, checked against the file's name and message hub; then the
    newest file) wins.

    Args:
        work_dir (str): The run's work directory.

    Returns:
        tuple: ``(path or None, rejected)``: ``None`` when the run has no checkpoint
        yet (training starts from scratch); ``rejected`` lists ``'path: reason'``
        for each candidate passed over.

    Raises:
        CheckpointError: Checkpoints exist but none verifies.
    """
    work_dir = osp.abspath(str(work_dir))
    rejected: List[str] = []
    named, note = resolve_last_checkpoint(work_dir)
    if note:
        rejected.append(note)
    if named:
        try:
            check_checkpoint_file(named)
            return named, rejected
        except CheckpointError as e:
            if osp.isfile(named):
                rejected.append(str(e))
            else:
                rejected.append(f'{work_dir}/last_checkpoint names {named}, '
                                'which does not exist (file deleted?)')
    found = sorted({
        osp.join(work_dir, name) for name in os.listdir(work_dir)
        if _CKPT_NAME.match(name)
    } - {named})
    ranked = []
    for path in found:
        try:
            check_checkpoint_file(path)
            ranked.append((_progress_of(path), path))
        except CheckpointError as e:
            rejected.append(str(e))
    if ranked:
        return max(ranked)[1], rejected
    if named is None and not found and not note:
        return None, rejected
    raise CheckpointError(
        f'{work_dir}: nothing to resume from: ' + (
            '; '.join(rejected) if rejected else
            'last_checkpoint is empty and no checkpoint exists'))


def init_cpu_distributed(timeout_s: int = 1800) -> bool:
    """Create a gloo process group from torchrun's environment when CUDA is absent.

    Args:
        timeout_s (int): Collective timeout in seconds.

    Returns:
        bool: True if a process group was created here.
    """
    if dist.is_initialized() or torch.cuda.is_available():
        return False
    if 'RANK' not in os.environ or 'WORLD_SIZE' not in os.environ:
        return False
    import datetime
    dist.init_process_group(
        backend='gloo', timeout=datetime.timedelta(seconds=timeout_s))
    return True


@RUNNERS.register_module()
class OAMLRunner(Runner):
    """Runner with weights-only checkpoints, exact resume and CPU DDP.

    Accepts every argument of :class:`mmengine.runner.Runner`.

    Attributes:
        work_dir_lock (WorkDirLock | None): A lock of ``work_dir`` the caller
            already holds (``tools/train.py``); ``train()`` then uses it instead
            of taking its own, and leaves releasing it to the caller.
    """

    work_dir_lock: Optional[WorkDirLock] = None

    def __init__(self, *args, **kwargs) -> None:
        work_dir = kwargs.get('work_dir', args[1] if len(args) > 1 else None)
        if work_dir is not None:
            # Before mmengine creates the folder and opens its log file there.
            check_work_dir(osp.abspath(work_dir))
        check_dataloader_configs(**{
            k: kwargs.get(k) for k in ('train_dataloader', 'val_dataloader',
                                       'test_dataloader')})
        launcher = kwargs.get('launcher', 'none')
        if launcher == 'pytorch':
            env_cfg = kwargs.get('env_cfg') or {}
            timeout = (env_cfg.get('dist_cfg') or {}).get('timeout', 1800)
            init_cpu_distributed(timeout)
        super().__init__(*args, **kwargs)

    @classmethod
    def from_cfg(cls, cfg) -> 'OAMLRunner':
        cfg = cfg.copy()
        if cfg.get('launcher', 'none') == 'pytorch' and \
                not torch.cuda.is_available():
            env_cfg = cfg.setdefault('env_cfg', {})
            env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
        return super().from_cfg(cfg)

    def register_hooks(self, default_hooks=None, custom_hooks=None) -> None:
        # mmengine removes one of its own default hooks set to None but asserts
        # on any other None entry; ours (default_hooks.threshold_calibration of
        # configs/_base_/default_runtime.py) are documented as switched off so.
        default_hooks = {k: v for k, v in (default_hooks or {}).items()
                         if v is not None or k in _MMENGINE_DEFAULT_HOOKS}
        ckpt = default_hooks.get('checkpoint', dict(type='CheckpointHook',
                                                    interval=1))
        if isinstance(ckpt, dict) and ckpt.get('type') in (
                'CheckpointHook', 'mmengine.CheckpointHook'):
            # Same options; prunes old checkpoints only after the new one is saved.
            default_hooks['checkpoint'] = dict(ckpt, type='OAMLCheckpointHook')
        super().register_hooks(default_hooks, custom_hooks)
        if not any(isinstance(h, SafeCheckpointHook) for h in self._hooks):
            self.register_hook(SafeCheckpointHook())

    def _safe_hook(self) -> Optional[SafeCheckpointHook]:
        for hook in self._hooks:
            if isinstance(hook, SafeCheckpointHook):
                return hook
        return None

    def save_checkpoint(self, out_dir, filename, file_client_args=None,
                        *args, backend_args=None, **kwargs) -> None:
        # Every rank runs this; mmengine's save itself runs on rank 0 only, so
        # sharded parameters are gathered here first.
        if file_client_args is None and backend_args is None and \
                '://' not in str(out_dir):
            backend_args = dict(backend='atomic_local')
        model = self.model.module if is_model_wrapper(self.model) \
            else self.model
        sharded = any(True for _ in model.modules()
                      if hasattr(_, 'sharded_parameters'))
        if sharded:
            self._sharded_optim_state = gather_sharded_state(
                model, getattr(self, 'optim_wrapper', None))
        try:
            super().save_checkpoint(out_dir, filename, file_client_args,
                                    *args, backend_args=backend_args, **kwargs)
        finally:
            if sharded:
                self._sharded_optim_state = None
                release_sharded_state(model)

    def call_hook(self, fn_name: str, **kwargs) -> None:
        gathered = getattr(self, '_sharded_optim_state', None)
        if fn_name == 'before_save_checkpoint' and gathered:
            put_sharded_optimizer_state(kwargs['checkpoint'], gathered)
        super().call_hook(fn_name, **kwargs)

    def load_or_resume(self) -> None:
        if self._has_loaded:
            return
        if self._resume and self._load_from is None:
            path, rejected = find_resumable_checkpoint(self.work_dir)
            for reason in rejected:
                print_log(f'not resuming from a damaged checkpoint: {reason}',
                          logger='current', level=30)
            if path is not None:
                self._load_from = path
        elif self._load_from is not None and '://' not in str(self._load_from):
            check_checkpoint_file(self._load_from)
        super().load_or_resume()

    def build_train_loop(self, loop):
        if isinstance(loop, dict):
            loop = copy.deepcopy(loop)
            iter_based = loop.get('type') in (
                'IterBasedTrainLoop', 'mmengine.IterBasedTrainLoop',
                IterBasedTrainLoop) or ('type' not in loop and
                                        loop.get('by_epoch') is False)
            if iter_based:
                # Same loop; its resume restores the random state after the
                # dataloader fast-forward (exact resume).
                loop.pop('by_epoch', None)
                loop['type'] = OAMLIterBasedTrainLoop
        return super().build_train_loop(loop)

    def train(self) -> torch.nn.Module:
        # Here, not in __init__: tools/test.py builds this runner from the same
        # config and must not be refused for a training-only setting.
        check_train_config(self._train_dataloader, self._train_loop)
        lock = None
        held = self.work_dir_lock
        if held is not None and held.is_locked and \
                osp.abspath(held.work_dir) == osp.abspath(self.work_dir):
            pass  # taken by the caller before the runner wrote its files
        elif self.rank == 0:
            # Before anything in the work dir is touched: a second run would
            # remove this one's in-progress temporary checkpoint below.
            lock = WorkDirLock(self.work_dir)
            lock.acquire()
        try:
            return self._train_locked()
        finally:
            if lock is not None:
                lock.release()

    def _train_locked(self) -> torch.nn.Module:
        if self.rank == 0:
            model = getattr(self.model, 'module', self.model)
            size = sum(t.numel() * t.element_size()
                       for t in list(model.parameters()) +
                       list(model.buffers()))
            check_work_dir(self.work_dir,
                           _CKPT_SIZE_FACTOR * size + _CKPT_SIZE_MARGIN)
            stale = glob.glob(osp.join(self.work_dir, _TMP_GLOB))
            for path in stale:
                # Left by a write that was killed; never a complete checkpoint.
                os.remove(path)
            if stale:
                print_log(f'removed {len(stale)} temporary file(s) of an '
                          'interrupted checkpoint write', logger='current',
                          level=30)
        try:
            return super().train()
        except NonFiniteLossError as e:
            path = self._save_nonfinite_checkpoint()
            if path is not None:
                e.args = (f'{e.args[0]} The weights before the skipped updates '
                          f'are in {path}.', )
            raise

    def _save_nonfinite_checkpoint(self) -> Optional[str]:
        name = f'nonfinite_iter_{self.iter + 1}.pth'
        try:
            self.save_checkpoint(self.work_dir, name, by_epoch=False)
        except Exception as err:  # noqa: BLE001  (keep the original error)
            print_log(f'could not save {name}: {err}', logger='current',
                      level=40)
            return None
        return osp.join(self.work_dir, name) if self.rank == 0 else None

    def resume(self, filename: str, resume_optimizer: bool = True,
               resume_param_scheduler: bool = True,
               map_location='default') -> None:
        self._resuming = True
        try:
            super().resume(filename, resume_optimizer, resume_param_scheduler,
                           map_location)
        finally:
            self._resuming = False
        hook = self._safe_hook()
        # Restored last: mmengine's resume may reseed when the seeds differ.
        if hook is not None and hook.loaded_rng_state is not None:
            set_rng_state(hook.loaded_rng_state)
            # The iteration loop restores it again after its fast-forward.
            self.resumed_rng_state = hook.loaded_rng_state
            hook.loaded_rng_state = None

    def load_checkpoint(self, filename: str, map_location='cpu',
                        strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]):
        """mmengine's ``load_checkpoint``; when resuming, checks the fit first.

        Resuming continues a run, so the checkpoint must fit the model and the
        optimizer exactly; mmengine would skip mismatched tensors with a warning
        and fail later inside the optimizer. ``load_from`` (fine-tuning) keeps
        mmengine's lenient behaviour.

        Raises:
            CheckpointError: When resuming: a tensor's shape, or the optimizer's
                kind, differs between the checkpoint and the config.
        """
        checkpoint = _load_checkpoint(filename, map_location=map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) \
            else self.model
        shard_optimizer_state(checkpoint, model,
                              getattr(self, 'optim_wrapper', None))
        if getattr(self, '_resuming', False):
            check_resume_fit(str(filename), checkpoint, model,
                             getattr(self, 'optim_wrapper', None))
        checkpoint = _load_checkpoint_to_model(
            model, checkpoint, strict, revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    def wrap_model(self, model_wrapper_cfg: Optional[dict], model):
        if self.distributed and not torch.cuda.is_available():
            model_wrapper_cfg = dict(model_wrapper_cfg or {})
            model_wrapper_cfg.setdefault('type', 'MMDistributedDataParallel')
            model_wrapper_cfg.setdefault('broadcast_buffers', False)
            model_wrapper_cfg.setdefault(
                'find_unused_parameters',
                self.cfg.get('find_unused_parameters', False))
            # CPU modules take no device ids (mmengine passes LOCAL_RANK).
            model_wrapper_cfg['device_ids'] = None
        ignored = ddp_ignored_names(model) if self.distributed else []
        if ignored:
            # Each rank holds its own slice: no broadcast, no averaging.
            from torch.nn.parallel import DistributedDataParallel
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                model, ignored)
        return super().wrap_model(model_wrapper_cfg, model)
