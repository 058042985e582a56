"""Diagnose a finished or running training from its work folder: logs + checkpoints.

Each check looks for one failure mode this project has met (``docs/reliability.md``,
"Diagnosing a run"):

* ``classifier_at_chance``: the margin head's training accuracy (``acc_adaface``) stays
  near ``1 / num_classes`` and its loss does not fall;
* ``kernel_norm_collapse``: the margin head's class-centre columns (unit norm at
  initialisation) shrink towards zero or turn non-finite;
* ``bn_nonfinite``: a BatchNorm running mean / variance is NaN or infinite (or a
  variance negative) in a checkpoint;
* ``lr_schedule``: the logged learning rate differs from what the config's
  ``param_scheduler`` gives at that iteration (iteration-based schedulers);
* ``occlusion_constant``: the occlusion head predicts one visibility value for every
  cell of every image.

The logs are mmengine's ``<work_dir>/<timestamp>/vis_data/scalars.json`` (one JSON
object per logging step, every resumed session merged by ``step``), the config is the
copy mmengine writes beside them, the checkpoints are ``<work_dir>/*.pth`` read with
the weights-only loader.
"""
import glob
import json
import math
import os.path as osp
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from oaml_mm.errors import CheckpointError, DataFormatError, MissingFileError

__all__ = [
    'Finding', 'read_scalars', 'find_config', 'list_checkpoints',
    'check_classifier_at_chance', 'check_kernel_norms', 'check_bn_stats',
    'expected_lrs', 'check_lr_schedule', 'check_occlusion_constant', 'diagnose_run'
]


@dataclass
class Finding:
    """One check's result: ``status`` is ``'ok'``, ``'flag'`` or ``'skipped'``."""

    check: str
    status: str
    message: str


def read_scalars(work_dir: str,
                 notes: Optional[List[str]] = None) -> Dict[int, dict]:
    """``step -> logged values`` of every session's ``scalars.json`` (later wins).

    A run killed while mmengine was writing a log line leaves that file's last
    line cut short: an unreadable LAST line is skipped (a sentence saying so is
    appended to ``notes``); an unreadable line anywhere else is corruption.

    Args:
        work_dir (str): An mmengine work folder.
        notes (list[str], optional): Receives one sentence per skipped cut line.

    Raises:
        DataFormatError: A line other than a file's last is not a JSON object
            with ``"step"``.
    """
    out: Dict[int, dict] = {}
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    for path in files:
        with open(path) as f:
            lines = [(n, line.strip()) for n, line in enumerate(f, 1)
                     if line.strip()]
        for i, (n, line) in enumerate(lines):
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or 'step' not in rec:
                    raise ValueError('expected an object with "step"')
            except ValueError as e:
                if i == len(lines) - 1:
                    if notes is not None:
                        notes.append(
                            f'{path}: last line {n} is incomplete (run killed '
                            'while writing it?); ignored')
                    break
                what = (f'not JSON: {e}' if isinstance(e, json.JSONDecodeError)
                        else str(e))
                raise DataFormatError(path, what, record=n) from None
            if 'loss' in rec or 'lr' in rec:  # training lines, not val lines
                out.setdefault(int(rec['step']), {}).update(rec)
    return dict(sorted(out.items()))


_JUDGED_KEYS = ('model', 'param_scheduler', 'optim_wrapper', 'train_cfg')


def find_config(work_dir: str, checkpoint: Optional[str] = None) -> Optional[str]:
    """The config the training run dumped, or None when the folder holds none.

    The work dir's ``*.py`` chosen by :func:`~oaml_mm.utils.find_run_config`
    (the one ``checkpoint``'s meta names, never merely the newest: a later
    ``tools/test.py`` dumps its own beside it); without any, the newest session's
    ``*/vis_data/config.py``.

    Raises:
        ConfigError: Several ``*.py`` that differ in the model or the schedule,
            none named by the checkpoint.
    """
    from oaml_mm.utils.config import find_run_config
    if glob.glob(osp.join(work_dir, '*.py')):
        # The checks read the schedule as well as the model.
        return find_run_config(work_dir, checkpoint, _JUDGED_KEYS)
    found = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'config.py')))
    return found[-1] if found else None


def list_checkpoints(work_dir: str) -> List[str]:
    """``*.pth`` of the work folder, ordered by the number in their name."""

    def key(p):
        m = re.findall(r'\d+', osp.basename(p))
        return (int(m[-1]) if m else -1, p)

    return sorted(glob.glob(osp.join(work_dir, '*.pth')), key=key)


def _series(scalars: Dict[int, dict], name: str) -> np.ndarray:
    return np.asarray([[s, r[name]] for s, r in scalars.items() if name in r],
                      np.float64).reshape(-1, 2)


def check_classifier_at_chance(scalars: Dict[int, dict], num_classes: int,
                               window: float = 0.1) -> Finding:
    """Flag when the last ``window`` of ``acc_<head>`` is below ``2 / classes``
    and ``loss_<head>`` fell by less than 3% from the first window (``<head>``: the
    margin head's name, ``adaface`` by default)."""
    # The keys carry the margin head's name (acc_adaface, acc_arcface, ...).
    name = next((k[4:] for r in scalars.values() for k in r
                 if k.startswith('acc_') and not k.startswith('acc_qaconv')
                 and f'loss_{k[4:]}' in r), 'adaface')
    acc = _series(scalars, f'acc_{name}')
    loss = _series(scalars, f'loss_{name}')
    if len(acc) < 4 or len(loss) < 4:
        return Finding('classifier_at_chance', 'skipped',
                       f'fewer than 4 logged acc_{name} / loss_{name} values')
    w = max(1, int(len(acc) * window))
    last_acc = float(acc[-w:, 1].mean())
    first_loss, last_loss = loss[:w, 1].mean(), loss[-w:, 1].mean()
    chance = 1.0 / num_classes
    stuck = last_acc <= 2 * chance and last_loss >= 0.97 * first_loss
    msg = (f'last {w} logs: acc_{name} {last_acc:.4f} (chance {chance:.4f}), '
           f'loss_{name} {first_loss:.3f} -> {last_loss:.3f}')
    return Finding('classifier_at_chance', 'flag' if stuck else 'ok', msg)


def check_kernel_norms(states: Sequence[Dict[str, torch.Tensor]],
                       names: Sequence[str], min_ratio: float = 0.1) -> Finding:
    """Flag when the median class-centre norm of the last checkpoint is below
    ``min_ratio`` x the first's (unit at initialisation), or non-finite."""
    medians = []
    for sd in states:
        k = sd.get('head.kernel')
        if k is None:
            return Finding('kernel_norm_collapse', 'skipped',
                           'no head.kernel in the checkpoints')
        k = k.float()
        if not torch.isfinite(k).all():
            return Finding('kernel_norm_collapse', 'flag',
                           f'non-finite margin-head kernel in {names[len(medians)]}')
        medians.append(float(k.norm(dim=0).median()))
    if not medians:
        return Finding('kernel_norm_collapse', 'skipped', 'no checkpoint')
    ref = max(medians[0], 1e-12) if len(medians) > 1 else 1.0
    ratio = medians[-1] / ref
    msg = ('median class-centre norm ' +
           ' -> '.join(f'{m:.3g}' for m in medians) + f' (ratio {ratio:.3g})')
    return Finding('kernel_norm_collapse', 'flag' if ratio < min_ratio else 'ok',
                   msg)


def check_bn_stats(states: Sequence[Dict[str, torch.Tensor]],
                   names: Sequence[str]) -> Finding:
    """Flag any non-finite BN running statistic or negative running variance."""
    if not states:
        return Finding('bn_nonfinite', 'skipped', 'no checkpoint')
    n = 0
    for sd, name in zip(states, names):
        for key, v in sd.items():
            if key.endswith(('running_mean', 'running_var')):
                n += 1
                v = v.float()
                if not torch.isfinite(v).all() or (
                        key.endswith('running_var') and bool((v < 0).any())):
                    return Finding('bn_nonfinite', 'flag',
                                   f'{key} in {osp.basename(name)} is non-finite '
                                   'or negative')
    if not n:
        return Finding('bn_nonfinite', 'skipped', 'no BatchNorm statistics')
    return Finding('bn_nonfinite', 'ok', f'{n} statistics finite in '
                   f'{len(states)} checkpoint(s)')


def expected_lrs(cfg, num_steps: int) -> Optional[np.ndarray]:
    """Learning rate of the first param group in iterations ``0..num_steps-1``.

    Replays ``cfg.param_scheduler`` on a one-parameter optimizer with the config's
    ``optim_wrapper.optimizer``. Returns None when a scheduler is epoch-based (its
    epoch length is not in the config).
    """
    from mmengine.registry import init_default_scope

    from oaml_mm.registry import OPTIMIZERS, PARAM_SCHEDULERS
    init_default_scope('oaml_mm')
    opt_cfg = dict(cfg.optim_wrapper.optimizer)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = OPTIMIZERS.build(dict(opt_cfg, params=[param]))
    sched_cfgs = cfg.get('param_scheduler') or []
    if isinstance(sched_cfgs, dict):
        sched_cfgs = [sched_cfgs]
    if any(c.get('by_epoch', True) for c in sched_cfgs):
        return None
    scheds = [PARAM_SCHEDULERS.build(dict(c), default_args=dict(optimizer=opt))
              for c in sched_cfgs]
    out = np.empty(num_steps)
    for i in range(num_steps):
        out[i] = opt.param_groups[0]['lr']
        for s in scheds:
            s.step()
    return out


def check_lr_schedule(scalars: Dict[int, dict], cfg,
                      rtol: float = 1e-3) -> Finding:
    """Flag logged ``lr`` values that match neither iteration ``step - 1`` nor
    ``step`` of :func:`expected_lrs` (mmengine logs 1-based steps)."""
    lr = _series(scalars, 'lr')
    if not len(lr):
        return Finding('lr_schedule', 'skipped', 'no lr logged')
    if cfg is None:
        return Finding('lr_schedule', 'skipped', 'no config in the work folder')
    exp = expected_lrs(cfg, int(lr[:, 0].max()) + 1)
    if exp is None:
        return Finding('lr_schedule', 'skipped',
                       'epoch-based schedulers: epoch length unknown')
    bad = []
    for step, value in lr:
        s = int(step)
        cands = [exp[i] for i in (s - 1, s) if 0 <= i < len(exp)]
        if not any(math.isclose(value, c, rel_tol=rtol, abs_tol=1e-12)
                   for c in cands):
            bad.append((s, value, cands[0] if cands else float('nan')))
    if bad:
        s, v, e = bad[0]
        return Finding('lr_schedule', 'flag',
                       f'{len(bad)} of {len(lr)} logged lr differ from the '
                       f'config; first at step {s}: {v:.6g}, expected {e:.6g}')
    return Finding('lr_schedule', 'ok', f'{len(lr)} logged lr match the config')


@torch.no_grad()
def check_occlusion_constant(model, num_images: int = 8,
                             min_std: float = 1e-3, seed: int = 0) -> Finding:
    """Flag when the occlusion head's output hardly varies over cells and images.

    Feeds ``num_images`` random 112x112 images (uniform noise and flat grey
    levels) through backbone and neck in eval mode: a collapsed head gives the same
    value whatever the input, a working one does not.
    """
    if getattr(model, 'neck', None) is None:
        return Finding('occlusion_constant', 'skipped', 'model has no occlusion head')
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(num_images, 3, 112, 112, generator=g) * 2 - 1
    x[num_images // 2:] = x[num_images // 2:].mean(dim=(1, 2, 3), keepdim=True)
    model.eval()
    vis = model.extract(x, flip_test=False)['visibility'].float()
    std, mean = float(vis.std()), float(vis.mean())
    msg = f'visibility mean {mean:.3f}, std {std:.2e} over {vis.numel()} cells'
    return Finding('occlusion_constant', 'flag' if std < min_std else 'ok', msg)


def diagnose_run(work_dir: str, checkpoint_limit: int = 3,
                 notes: Optional[List[str]] = None) -> List[Finding]:
    """Run every check on ``work_dir``.

    Args:
        work_dir (str): An mmengine work folder.
        checkpoint_limit (int): Read the first and the last ``checkpoint_limit - 1``
            checkpoints only. Defaults to 3.
        notes (list[str], optional): Receives sentences about what was read
            around (a log's cut last line, see :func:`read_scalars`).

    Returns:
        list[Finding]: One per check.

    Raises:
        MissingFileError: ``work_dir`` is not a folder, or holds no run (neither
            a ``*/vis_data/scalars.json`` log nor a ``*.pth`` checkpoint).
        DataFormatError: A log line other than a file's last is unreadable.
    """
    if not osp.isdir(work_dir):
        raise MissingFileError(work_dir, 'the run\'s work folder')
    from oaml_mm.utils.checkpoint import (check_checkpoint_fits,
                                          safe_load_checkpoint)
    from oaml_mm.utils.config import load_config
    ckpts = list_checkpoints(work_dir)
    if not ckpts and not glob.glob(
            osp.join(work_dir, '*', 'vis_data', 'scalars.json')):
        # Every check would say "skipped": a wrong folder, not a healthy run.
        raise MissingFileError(
            osp.join(work_dir, '*', 'vis_data', 'scalars.json'),
            'no training run in this folder: neither a log nor a *.pth '
            'checkpoint; give the work_dir tools/train.py wrote to')
    scalars = read_scalars(work_dir, notes)
    cfg_path = find_config(work_dir, ckpts[-1] if ckpts else None)
    cfg = load_config(cfg_path) if cfg_path else None
    if len(ckpts) > checkpoint_limit:
        ckpts = ckpts[:1] + ckpts[-(checkpoint_limit - 1):]
    states = []
    for p in ckpts:
        ck = safe_load_checkpoint(p)
        states.append(ck.get('state_dict', ck) if isinstance(ck, dict) else {})
    findings = []
    num_classes = None
    if cfg is not None:
        num_classes = cfg.get('model', {}).get('head', {}).get('num_classes')
    if num_classes:
        findings.append(check_classifier_at_chance(scalars, int(num_classes)))
    else:
        findings.append(Finding('classifier_at_chance', 'skipped',
                                'no model.head.num_classes in a config'))
    findings.append(check_kernel_norms(states, ckpts))
    findings.append(check_bn_stats(states, ckpts))
    findings.append(check_lr_schedule(scalars, cfg))
    if cfg is not None and states:
        from mmengine.registry import init_default_scope

        from oaml_mm.registry import MODELS
        init_default_scope('oaml_mm')
        model = MODELS.build(cfg.model)
        try:
            # A checkpoint that does not fill the config's model would leave
            # parts at random values, and the check would judge those.
            check_checkpoint_fits(ckpts[-1], states[-1], model)
        except CheckpointError as e:
            findings.append(Finding('occlusion_constant', 'skipped',
                                    f'the config does not fit: {e}'))
        else:
            model.load_state_dict(states[-1], strict=False)
            findings.append(check_occlusion_constant(model))
    else:
        findings.append(Finding('occlusion_constant', 'skipped',
                                'needs a config and a checkpoint'))
    return findings
