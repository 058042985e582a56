"""GPU readiness check: AMP training, one-process DDP, QAConv matching, IJB-C scale.

The measurements behind ``tools/misc/gpu_check.sh`` (``tools/misc/gpu_check.py``
parses the options and calls :func:`run_check`). Each step returns result rows
(``name``, ``value``, ``unit``, ``note``); :func:`run_check` times every step on its
own, reports every step even when another fails and writes ``gpu_check.json`` and
``gpu_check.md``. What each figure means: ``docs/benchmarks.md``, "GPU check".
"""
import copy
import datetime
import json
import os
import os.path as osp
import platform
import re
import socket
import subprocess
import sys
import time
import traceback
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

__all__ = ['STEPS', 'step_train', 'step_ddp', 'step_qaconv', 'step_ijbc',
           'machine_info', 'write_results', 'run_check']

#: The steps, in the order they run.
STEPS = ('train', 'ddp', 'qaconv', 'ijbc')


# --------------------------------------------------------------------- steps
def _tiny_model_cfg() -> dict:
    return dict(
        type='OAMLRecognizer',
        backbone=dict(type='IResNet', depth=18, width_mult=0.125,
                      embedding_size=16),
        neck=dict(type='OcclusionHead', in_channels=64, hidden_channels=8),
        head=dict(type='AdaFaceHead', in_channels=16, num_classes=64),
        qaconv_head=dict(type='QAConvHead', in_channels=64))


def _ir50_model_cfg(num_classes: int) -> dict:
    from mmengine.config import Config
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/_base_/models/oaml_ir50.py')).model.to_dict()
    cfg['head']['num_classes'] = num_classes
    return cfg


def _train_batch(n: int, n_occ: int, seed: int) -> dict:
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 112, 112), dtype=torch.uint8,
                           generator=g)
    samples = [DataSample().set_gt_label(i // 4) for i in range(n)]
    occ = []
    for i in range(n_occ):
        s = DataSample()
        vis = torch.ones(1, 7, 7)
        if i % 5:  # 80% occluded, as DualLoaderHook's default mix
            vis[:, 4:] = 0.0
        s.set_field(vis, 'gt_visibility')
        occ.append(s)
    return dict(inputs=list(images), data_samples=samples,
                occlusion=dict(inputs=list(images[:n_occ].flip(3)),
                               data_samples=occ))


def step_train(dev: torch.device, dry: bool, iters: int,
               batch_size: int) -> List[dict]:
    """AMP training of OAML (IR-50 on CUDA) through ``train_step``."""
    from mmengine.logging import MessageHub
    from mmengine.optim import OptimWrapper

    import oaml_mm  # noqa: F401
    from oaml_mm.engine.optimizers import (GuardedAmpOptimWrapper,
                                           GuardedBF16AutocastOptimWrapper)
    from oaml_mm.engine.optimizers.guarded_optim_wrapper import NONFINITE_TOTAL
    from oaml_mm.registry import MODELS
    hub = MessageHub.get_instance('gpu_check_train')
    torch.manual_seed(0)
    model = MODELS.build(_tiny_model_cfg() if dry else _ir50_model_cfg(1000))
    model.to(dev).train()
    sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                          weight_decay=5e-4)
    if dev.type == 'cuda':
        optim: OptimWrapper = GuardedAmpOptimWrapper(optimizer=sgd,
                                                     dtype='float16')
        precision = 'fp16 AMP (GuardedAmpOptimWrapper, dynamic loss scale)'
    else:
        optim = GuardedBF16AutocastOptimWrapper(optimizer=sgd)
        precision = ('bf16 autocast (CPU: GuardedBF16AutocastOptimWrapper)')
    n_occ = batch_size
    batches = [_train_batch(batch_size, n_occ, s) for s in range(2)]
    warmup = 1 if dry else 5
    for i in range(warmup):
        log = model.train_step(copy.deepcopy(batches[i % 2]), optim)
    _sync(dev)
    if dev.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    for i in range(iters):
        log = model.train_step(copy.deepcopy(batches[i % 2]), optim)
    _sync(dev)
    seconds = time.perf_counter() - t0
    loss = float(log['loss'].detach())
    if not torch.isfinite(torch.tensor(loss)):
        raise RuntimeError(f'training loss is {loss} after {iters} iterations')
    images = iters * (batch_size + n_occ)
    scale = optim.loss_scaler.get_scale() if hasattr(optim, 'loss_scaler') \
        else None
    arch = 'IR-18 w0.125 (dry run)' if dry else 'IR-50'
    note = (f'OAML {arch}, batch {batch_size} + occlusion {n_occ}, {precision}, '
            f'{iters} timed iterations after {warmup}; final loss {loss:.3f}, '
            f'non-finite skips {int(hub.get_info(NONFINITE_TOTAL, 0))}'
            + (f', loss scale {scale:g}' if scale is not None else ''))
    rows = [
        _row('train/images_per_s', images / seconds, 'images/s', note),
        _row('train/ms_per_iter', 1000 * seconds / iters, 'ms/iter', note),
    ]
    if dev.type == 'cuda':
        rows.append(_row('train/peak_memory',
                         torch.cuda.max_memory_allocated(dev) / 2**30, 'GiB',
                         'torch.cuda.max_memory_allocated'))
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def step_ddp(dev: torch.device, dry: bool, out: str, iters: int) -> List[dict]:
    """``tools/dist_train.sh CONFIG 1 --amp`` on a tiny SynthFace set."""
    from oaml_mm.synthface import SynthFaceConfig, generate_synthface
    data = osp.join(out, 'ddp_data')
    if not osp.isfile(osp.join(data, 'synthface.json')):
        generate_synthface(data, SynthFaceConfig(
            identities=8, images_per_id=4, test_identities=4,
            occluded_per_id=1, val_images_per_id=4, val_pairs=20,
            ijbc_subjects=1, ijbc_probe_templates=1))
    work = osp.join(out, 'ddp_work')
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(_free_port()))
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_PORT'):
        env.pop(key, None)
    cmd = ['bash', osp.join(ROOT, 'tools/dist_train.sh'),
           osp.join(ROOT, 'configs/synthface/oaml_ir18_synthface.py'), '1',
           '--amp', '--no-validate', '--work-dir', work, '--cfg-options',
           f'data_root={data}', f'occlusion_data_root={data}',
           f'test_data_root={data}', 'model.head.num_classes=8',
           f'train_cfg.max_iters={iters}', 'default_hooks.logger.interval=1',
           'train_dataloader.num_workers=0',
           'train_dataloader.persistent_workers=False']
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    seconds = time.perf_counter() - t0
    log = proc.stdout + proc.stderr
    with open(osp.join(out, 'ddp.log'), 'w') as f:
        f.write(log)
    if proc.returncode != 0:
        raise RuntimeError(f'tools/dist_train.sh exited {proc.returncode}; '
                           f'log: {osp.join(out, "ddp.log")}\n{log[-2000:]}')
    backend = re.search(r"dist_cfg: \{'backend': '(\w+)'", log)
    done = re.findall(r'Iter\(train\) \[\s*(\d+)/', log)
    if not done or int(done[-1]) != iters:
        raise RuntimeError(f'expected {iters} logged iterations, got '
                           f'{done[-1:] or "none"}; see {out}/ddp.log')
    if not osp.isfile(osp.join(work, f'iter_{iters}.pth')):
        raise RuntimeError(f'no checkpoint iter_{iters}.pth in {work}')
    name = backend.group(1) if backend else 'unknown'
    if dev.type == 'cuda' and name != 'nccl':
        raise RuntimeError(f'expected the nccl backend on CUDA, got {name}')
    return [_row('ddp/one_process_wall_time', seconds, 's',
                 f'tools/dist_train.sh, 1 process, backend {name}, --amp, '
                 f'{iters} iterations of oaml_ir18_synthface (incl. start-up), '
                 f'checkpoint iter_{iters}.pth written')]


def step_qaconv(dev: torch.device, dry: bool) -> List[dict]:
    """``bench_qaconv.run`` on the device (fp32 and fp16 / bf16)."""
    from benchmarks import bench_qaconv
    rows = bench_qaconv.run(quick=True, device=str(dev),
                            num=16 if dry else None,
                            repeats=1 if dry else None, memory_check=False)
    return [dict(r, name='qaconv/' + r['name']) for r in rows]


def step_ijbc(dev: torch.device, dry: bool,
              sample_rows: Optional[int]) -> List[dict]:
    """QAConv over an IJB-C-shaped pair list, tiled, on the device."""
    from benchmarks import bench_ijbc_scale as ijbc
    from oaml_mm.evaluation.functional import (QACONV_MIN_FILL,
                                               score_pairs_tiled)
    size = dict(num_enrol=64, num_templates=448, num_pairs=6000,
                cohort=16) if dry else {}
    a, b, _ = ijbc.make_pairs('cohort', **size)
    feats = ijbc.make_features(size.get('num_templates', ijbc.NUM_TEMPLATES))
    maps, vis = feats['maps'], feats['vis']
    if dev.type == 'cuda':
        maps, vis = maps.to(dev), vis.to(dev)
    head = ijbc.build_matcher().to(dev)
    head.half_test = True  # fp16 on CUDA (bf16 on CPU), as configs/oaml_ir50
    n_all = a.numel()
    if sample_rows:
        keep = a < a.unique()[min(sample_rows, a.unique().numel()) - 1] + 1
        a, b = a[keep], b[keep]
    with torch.no_grad():
        score_pairs_tiled(head.match, head.match_pairs, maps, vis, a[:4096],
                          b[:4096], min_fill=QACONV_MIN_FILL, device=dev)
        _sync(dev)
        t0 = time.perf_counter()
        scores = score_pairs_tiled(head.match, head.match_pairs, maps, vis, a,
                                   b, min_fill=QACONV_MIN_FILL, device=dev)
        _sync(dev)
    seconds = time.perf_counter() - t0
    if not bool(torch.isfinite(scores).all()):
        raise RuntimeError('non-finite QAConv scores')
    rate = a.numel() / seconds
    note = (f'cohort structure, {n_all} listed pairs, {a.numel()} timed, maps '
            f'{"on the GPU" if dev.type == "cuda" else "on the CPU"}, '
            f'half_test=True')
    return [_row('ijbc/qaconv_pairs_per_s', rate, 'pairs/s', note),
            _row('ijbc/qaconv_time_all_pairs', n_all / rate, 's', note)]


# ------------------------------------------------------------------- helpers
def _sync(dev: torch.device) -> None:
    if dev.type == 'cuda':
        torch.cuda.synchronize(dev)


def _row(name: str, value: float, unit: str, note: str = '') -> dict:
    return dict(name=name, value=float(value), unit=unit, note=note)


def machine_info(dev: torch.device, dry: bool) -> Dict[str, str]:
    info = dict(
        date=datetime.datetime.now().strftime('%Y-%m-%d %H:%M'),
        mode='dry run (CPU, tiny sizes: not a measurement)' if dry else 'CUDA',
        python=platform.python_version(), torch=torch.__version__,
        platform=platform.platform(), cpu=_cpu_model(),
        cpu_cores=str(os.cpu_count()))
    if dev.type == 'cuda':
        prop = torch.cuda.get_device_properties(dev)
        info.update(gpu=prop.name, gpu_memory=f'{prop.total_memory / 2**30:.0f} GiB',
                    cuda=str(torch.version.cuda),
                    cudnn=str(torch.backends.cudnn.version()),
                    nccl='.'.join(map(str, torch.cuda.nccl.version())))
    return info


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def write_results(out: str, info: Dict[str, str], steps: Dict[str, dict]) -> str:
    """Write ``gpu_check.json`` and ``gpu_check.md``; return the Markdown path."""
    with open(osp.join(out, 'gpu_check.json'), 'w') as f:
        json.dump(dict(machine=info, steps=steps), f, indent=1)
    lines = ['# GPU check (tools/misc/gpu_check.sh)', '', '| | |', '|---|---|']
    lines += [f'| {k} | {v} |' for k, v in info.items()]
    lines += ['', '| step | status | seconds | figure | value | unit | note |',
              '|---|---|---|---|---|---|---|']
    for step, res in steps.items():
        rows = res['rows'] or [dict(name='', value=None, unit='', note='')]
        for r in rows:
            value = '' if r.get('value') is None else f"{r['value']:,.4g}"
            base = ''
            if r.get('baseline_value'):
                base = (f" (baseline {r['baseline_name']}: "
                        f"{r['baseline_value']:,.4g}, ratio {r['ratio']:.3g})")
            cells = [step, res['status'], f"{res['seconds']:.1f}", r['name'],
                     value, r['unit'], (r.get('note') or '') + base]
            # A '|' inside a note (|score - reference|) would split the cell.
            lines.append('| ' + ' | '.join(str(c).replace('|', '\\|')
                                           for c in cells) + ' |')
    path = osp.join(out, 'gpu_check.md')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path


def run_check(out: str,
              dry: bool = False,
              steps: Sequence[str] = STEPS,
              iters: Optional[int] = None,
              batch_size: Optional[int] = None,
              ddp_iters: Optional[int] = None,
              ijbc_sample_rows: Optional[int] = None) -> Tuple[str, Dict[str, dict]]:
    """Run the steps, each timed and reported on its own, and write the results.

    Args:
        out (str): Folder for ``gpu_check.json`` / ``gpu_check.md`` (created).
        dry (bool): CPU and tiny sizes: checks the code, measures nothing.
        steps (Sequence[str]): Names from :data:`STEPS`.
        iters (int, optional): Timed training iterations (default 50; dry run 2).
        batch_size (int, optional): Main batch, a multiple of 4 and >= 8
            (default 128; dry run 8).
        ddp_iters (int, optional): Iterations of the DDP run (default 20; dry 2).
        ijbc_sample_rows (int, optional): Time QAConv on the pairs of the first N
            enrolment templates only and extrapolate (default: all pairs).

    Returns:
        tuple: The Markdown path and ``{step: {'status', 'seconds', 'rows'}}``;
        ``status`` is ``'ok'`` or ``'FAILED: <error>'``.
    """
    dev = torch.device('cpu' if dry else 'cuda')
    out = osp.abspath(out)
    os.makedirs(out, exist_ok=True)
    iters = iters or (2 if dry else 50)
    batch = batch_size or (8 if dry else 128)
    ddp_iters = ddp_iters or (2 if dry else 20)
    runs: Dict[str, Callable[[], List[dict]]] = dict(
        train=lambda: step_train(dev, dry, iters, batch),
        ddp=lambda: step_ddp(dev, dry, out, ddp_iters),
        qaconv=lambda: step_qaconv(dev, dry),
        ijbc=lambda: step_ijbc(dev, dry, ijbc_sample_rows))
    results: Dict[str, dict] = {}
    info = machine_info(dev, dry)
    for name in steps:
        t0 = time.perf_counter()
        try:
            rows, status = runs[name](), 'ok'
        except Exception as exc:  # report every step, then fail at the end
            traceback.print_exc()
            rows, status = [], f'FAILED: {type(exc).__name__}: {exc}'[:500]
        results[name] = dict(status=status, seconds=time.perf_counter() - t0,
                             rows=rows)
        print(f'gpu_check: {name}: {status} ({results[name]["seconds"]:.1f} s)',
              flush=True)
        if dev.type == 'cuda':
            torch.cuda.empty_cache()
    return write_results(out, info, results), results
