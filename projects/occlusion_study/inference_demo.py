"""Inference API demo on SynthFace: train a small OAML model, then measure compare,
gallery search (rank-1 with and without QAConv re-ranking) and extract throughput.

    python -m projects.occlusion_study.inference_demo --data data/synthface \
        --work-dir work_dirs/inference_demo    # train 150 iterations + evaluate
    python -m projects.occlusion_study.inference_demo --data data/synthface \
        --work-dir work_dirs/inference_demo --skip-train
    python -m projects.occlusion_study.inference_demo --throughput-only

The model is the CPU-size OAML of docs/models.md (IR-18, width 0.25, 128-d) with the
``'gate'`` visibility mode and occlusion-loss weight 1.0 (the better setting of the CPU
feasibility study, docs/synthface.md), trained for a fixed number of iterations
with ``ThresholdCalibrationHook`` (FAR 1e-3 on the calibration split
``val/calib.bin``, which no test set shares identities with; docs/synthface.md) and
``VisibilityVisualizationHook``. The figures in docs/inference.md come from this
script.
"""
import argparse
import json
import os
import os.path as osp
import time

import numpy as np
import torch

import oaml_mm  # noqa: F401


def demo_config(data: str, work_dir: str, iters: int, batch: int = 32) -> dict:
    """The demo training config (a plain dict, dumped by the runner)."""
    # The calibration split: the clean, masked and occluded test pairs stay
    # unseen for the evaluation.
    val_names = ['calib']
    return dict(
        default_scope='oaml_mm',
        runner_type='OAMLRunner',
        work_dir=work_dir,
        model=dict(
            type='OAMLRecognizer',
            data_preprocessor=dict(type='FaceDataPreprocessor', channel_order='bgr'),
            backbone=dict(type='IResNet', depth=18, width_mult=0.25,
                          embedding_size=128, channels_last=True),
            neck=dict(type='OcclusionHead', in_channels=128, hidden_channels=32),
            head=dict(type='AdaFaceHead', in_channels=128, num_classes=400),
            qaconv_head=dict(type='QAConvHead', in_channels=128, vis_mode='gate'),
            loss_weights=dict(adaface=0.1, qaconv=0.9, occlusion=1.0),
            test_cfg=dict(flip_test=False, return_feature_maps=True,
                          half_maps=True)),
        train_dataloader=dict(
            batch_size=batch, num_workers=1, persistent_workers=True,
            sampler=dict(type='PKSampler', batch_size=batch, num_instances=4),
            dataset=dict(
                type='MXFaceDataset', data_root=f'{data}/train', num_classes=400,
                pipeline=[dict(type='MedicalMaskOcclusion', prob=0.3),
                          dict(type='FaceRandomFlip', prob=0.5),
                          dict(type='PackFaceInputs')])),
        val_dataloader=[
            dict(batch_size=128, num_workers=0,
                 sampler=dict(type='DefaultSampler', shuffle=False),
                 dataset=dict(type='VerificationBinDataset',
                              data_root=f'{data}/val', ann_file=f'{n}.bin',
                              name=n, pipeline=[dict(type='PackFaceInputs')]))
            for n in val_names
        ],
        val_evaluator=[
            dict(type='VerificationMetric', dataset_name=n, progress=False)
            for n in val_names
        ],
        val_cfg=dict(type='FaceValLoop', progress=False),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=iters,
                       val_interval=iters),
        optim_wrapper=dict(
            type='GuardedOptimWrapper', max_nonfinite_skips=5,
            optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4),
            paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.05, by_epoch=False, begin=0,
                 end=max(1, iters // 10)),
            dict(type='MultiStepLR', by_epoch=False,
                 milestones=[int(iters * 0.7), int(iters * 0.9)], gamma=0.1)
        ],
        default_hooks=dict(
            timer=dict(type='IterTimerHook'),
            logger=dict(type='LoggerHook', interval=10),
            param_scheduler=dict(type='ParamSchedulerHook'),
            checkpoint=dict(type='CheckpointHook', by_epoch=False,
                            interval=iters, max_keep_ckpts=1)),
        custom_hooks=[
            dict(type='DualLoaderHook', occluded_ratio=0.8, batch_size=batch // 2,
                 occluded_dataloader=dict(
                     num_workers=0,
                     dataset=dict(type='OcclusionMaskDataset',
                                  data_root=f'{data}/occluded',
                                  pipeline=[dict(type='FaceRandomFlip', prob=0.5),
                                            dict(type='PackFaceInputs')]))),
            dict(type='MarginWarmupHook', warmup_ratio=0.3),
            dict(type='ThresholdCalibrationHook', far=1e-3,
                 datasets=val_names),
            dict(type='VisibilityVisualizationHook', by_epoch=False,
                 interval=max(1, iters // 4), num_images=16,
                 dataloader_index=1),
        ],
        visualizer=dict(type='UniversalVisualizer',
                        vis_backends=[dict(type='LocalVisBackend'),
                                      dict(type='TensorboardVisBackend')]),
        log_processor=dict(by_epoch=False, window_size=10),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'),
                     mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0)),
        randomness=dict(seed=0),
        log_level='INFO',
    )


def train(args) -> None:
    from mmengine.config import Config

    from oaml_mm.registry import RUNNERS
    cfg = Config(demo_config(args.data, args.work_dir, args.iters))
    cfg_path = osp.join(args.work_dir, 'inference_demo_cfg.py')
    os.makedirs(args.work_dir, exist_ok=True)
    cfg.dump(cfg_path)
    cfg = Config.fromfile(cfg_path)
    runner = RUNNERS.build(cfg)
    runner.train()


def _bin_crops(path: str) -> torch.Tensor:
    """Decoded RGB crops [N, 3, 112, 112] of a verification .bin."""
    import cv2

    from oaml_mm.datasets import load_verification_bin
    images, _ = load_verification_bin(path)
    out = np.stack([cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8),
                                              cv2.IMREAD_COLOR),
                                 cv2.COLOR_BGR2RGB) for b in images])
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def evaluate(args) -> dict:
    from oaml_mm.apis import FaceGallery, FaceRecognizer
    from oaml_mm.datasets import load_verification_bin
    rec = FaceRecognizer.from_work_dir(args.work_dir)
    report = dict(calibration=rec.calibration)
    val = osp.join(args.data, 'val')
    from oaml_mm.evaluation.functional import auc, calibrate_thresholds
    feats, pair_scores = {}, {}

    def scored(name):
        crops = _bin_crops(osp.join(val, f'{name}.bin'))
        _, issame = load_verification_bin(osp.join(val, f'{name}.bin'))
        f = rec.extract(crops, return_feature_maps=True)
        a = {k: v[0::2] for k, v in f.items()}
        b = {k: v[1::2] for k, v in f.items()}
        return crops, f, (rec.score_pairs(a, b), np.asarray(issame, bool))

    for name in ('clean', 'masked', 'occluded'):
        crops, f, pair_scores[name] = scored(name)
        feats[name] = (crops, f)
    # The checkpoint's thresholds (FAR 1e-3) and, for a model this small, a
    # looser operating point (FAR 1e-2) from the same calibration pairs.
    cal_scores, cal_same = scored('calib')[2]
    loose = calibrate_thresholds(
        {b: cal_scores[b] for b in ('adaface', 'qaconv')}, cal_same, 1e-2,
        rec.calibration.get('fuse_weights', (0.5, 0.5)))
    report['thresholds_far1e-2'] = {b: v['threshold']
                                    for b, v in loose['branches'].items()}
    for name, (scores, same) in pair_scores.items():
        res = {}
        for branch, s in scores.items():
            row = dict(AUC=auc(s, same), genuine_mean=float(s[same].mean()),
                       impostor_mean=float(s[~same].mean()))
            for tag, thr in (('far1e-3', rec.thresholds.get(branch)),
                             ('far1e-2', loose['branches'][branch]['threshold'])):
                if thr is None:
                    continue
                row[tag] = dict(accuracy=float(((s >= thr) == same).mean()),
                                tar=float((s[same] >= thr).mean()),
                                far=float((s[~same] >= thr).mean()))
            res[branch] = row
        report[f'compare/{name}'] = res

    # Gallery: 2 clean images per test identity; probes: other images of the
    # same identities, clean or occluded.
    lab = {n: np.load(osp.join(val, f'{n}.labels.npy')) for n in feats}
    types = {n: open(osp.join(val, f'{n}.types.txt')).read().split()
             for n in feats}
    crops, f = feats['clean']
    gallery = FaceGallery(rec)
    enrolled = {}
    seen = set()
    for i, ident in enumerate(lab['clean']):
        # A rendered image appears in several pairs; enrol distinct crops only.
        key = crops[i].numpy().tobytes()
        if key in seen or len(enrolled.get(ident, [])) >= 2:
            continue
        seen.add(key)
        enrolled.setdefault(ident, []).append(i)
    for ident, rows in sorted(enrolled.items()):
        gallery.enrol_features(str(ident), {k: v[rows] for k, v in f.items()})
    probe_sets = {}
    for name in ('masked', 'occluded', 'clean'):
        crops_n, f_n = feats[name]
        rows, used = [], set()
        for i, ident in enumerate(lab[name]):
            key = crops_n[i].numpy().tobytes()
            occl = types[name][i] != 'none'
            want = occl if name != 'clean' else True
            if not want or key in used or key in seen or \
                    str(ident) not in gallery:
                continue
            used.add(key)
            rows.append(i)
        kind = 'clean' if name == 'clean' else f'{name}-occluded'
        probe_sets[kind] = (f_n, rows, lab[name])
    search = {}
    for kind, (f_n, rows, labels) in probe_sets.items():
        pf = {k: v[rows] for k, v in f_n.items()}
        truth = [str(labels[i]) for i in rows]
        out = {}
        for rerank in (False, True):
            t0 = time.perf_counter()
            hits = gallery.search_features(pf, top_k=5, rerank=rerank,
                                           rerank_k=20)
            dt = time.perf_counter() - t0
            r1 = float(np.mean([h[0]['name'] == t for h, t in zip(hits, truth)]))
            r5 = float(np.mean([t in [x['name'] for x in h]
                                for h, t in zip(hits, truth)]))
            out['rerank' if rerank else 'cosine'] = dict(
                rank1=r1, rank5=r5, ms_per_probe=1000 * dt / max(len(rows), 1))
        out['probes'] = len(rows)
        search[kind] = out
    report['search'] = dict(identities=len(gallery), **search)
    return report


def throughput(args) -> dict:
    """extract() images/s on CPU at batch 1 and 64 for the demo width and IR-50.

    Feature maps are returned (what a gallery needs); flip test is off.
    """
    from oaml_mm.apis import FaceRecognizer
    torch.set_num_threads(args.threads)
    models = {
        'IR-18 w0.25 (demo)': dict(depth=18, width_mult=0.25, embedding_size=128),
        'IR-50 w1.0': dict(depth=50, width_mult=1.0, embedding_size=512),
    }
    out = {}
    for name, bb in models.items():
        c = bb['embedding_size']
        ch = int(round(512 * bb['width_mult']))
        cfg = dict(type='OAMLRecognizer',
                   backbone=dict(type='IResNet', **bb),
                   neck=dict(type='OcclusionHead', in_channels=ch),
                   head=dict(type='AdaFaceHead', in_channels=c, num_classes=10),
                   qaconv_head=dict(type='QAConvHead', in_channels=ch),
                   test_cfg=dict(flip_test=False))
        rec = FaceRecognizer(cfg)
        res = {}
        for bs, reps in ((1, 20), (64, 3)):
            x = torch.randint(0, 256, (bs, 3, 112, 112), dtype=torch.uint8)
            for _ in range(3):  # oneDNN primitive creation, allocator warm-up
                rec.extract(x, return_feature_maps=True)
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                rec.extract(x, return_feature_maps=True)
                times.append(time.perf_counter() - t0)
            # Median: the machine is shared, single calls can stall.
            res[f'batch{bs}'] = bs / float(np.median(times))
        out[name] = res
        print(name, {k: f'{v:.1f} img/s' for k, v in res.items()})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', default='data/synthface')
    p.add_argument('--work-dir', default='work_dirs/inference_demo')
    p.add_argument('--iters', type=int, default=150)
    p.add_argument('--skip-train', action='store_true')
    p.add_argument('--throughput-only', action='store_true')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--out', help='write the report as JSON')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.throughput_only:
        report = dict(throughput=throughput(args))
    else:
        from oaml_mm.synthface import generate_synthface
        if not osp.isfile(osp.join(args.data, 'synthface.json')):
            generate_synthface(args.data)
        if not args.skip_train:
            train(args)
        report = evaluate(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text)


if __name__ == '__main__':
    main()
