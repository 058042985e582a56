"""Refit an occlusion head alone on a trained recognizer's frozen backbone.

Separates the head's design from its training inside OAML (SGD at the recognizer's
learning rate, 500 iterations in the demo): the backbone of CHECKPOINT is frozen
(eval mode, no gradient; its outputs computed once, without flips), a *fresh* head
of the config's type learns with AdamW (one-cycle) on the occluded training set's
pixel masks plus clean training faces labelled all visible, and the recognizer
with the refitted head is saved, for ``multiscale_head.py`` to measure.

Example::

    python projects/occlusion_study/refit_head.py CONFIG CHECKPOINT \\
        --steps 1000 --out work_dirs/refit/iter_refit.pth
"""
import argparse
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--out', required=True, help='checkpoint with the new head')
    p.add_argument('--steps', type=int, default=1000)
    p.add_argument('--lr', type=float, default=2e-3)
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--clean-ratio', type=float, default=0.25)
    p.add_argument('--data-root', default='data/synthface')
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)

    import torch
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    from oaml_mm.errors import OAMLError
    from oaml_mm.models.functional import (resize_visibility,
                                           stack_gt_visibility)
    from oaml_mm.registry import DATASETS, MODELS
    from oaml_mm.utils import atomic_save, load_config
    from oaml_mm.utils.checkpoint import (check_checkpoint_fits,
                                          safe_load_checkpoint)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    init_default_scope('oaml_mm')
    try:
        cfg = load_config(args.config)
        model = MODELS.build(cfg.model)
        # Verified, and refused unless it fills the whole model: mmengine's
        # loader keeps what does not match at random values, and the refit
        # would then measure a head on a random backbone. The occlusion head
        # is replaced below, so the checkpoint need not hold one.
        check_checkpoint_fits(args.checkpoint,
                              safe_load_checkpoint(args.checkpoint, decode=False),
                              model, ignore=('head', 'neck'))
    except OAMLError as e:
        print(f'refit_head: {type(e).__name__}: {e}', file=sys.stderr)
        return 2
    load_checkpoint(model, args.checkpoint, map_location='cpu', logger='silent')
    model.neck = MODELS.build(cfg.model.neck)  # fresh head, same design
    model.eval()
    neck = model.neck.train()
    occ = DATASETS.build(dict(
        type='OcclusionMaskDataset', data_root=f'{args.data_root}/occluded',
        pipeline=[dict(type='FaceRandomFlip', prob=0.5),
                  dict(type='PackFaceInputs', grid=(112, 112))]))
    clean = DATASETS.build(dict(
        type='MXFaceDataset', data_root=f'{args.data_root}/train',
        pipeline=[dict(type='FaceRandomFlip', prob=0.5),
                  dict(type='PackFaceInputs', grid=(112, 112))]))
    n_clean = int(round(args.batch * args.clean_ratio))
    n_occ = args.batch - n_clean
    size = getattr(neck, 'target_size', None)
    t0 = time.time()

    def features(dataset, count, all_visible):
        """Frozen-backbone inputs of the head and targets of the first images."""
        feats, targets, grid = [], [], None
        for start in range(0, count, 64):
            batch = pseudo_collate([dataset[i] for i in
                                    range(start, min(count, start + 64))])
            if all_visible:
                for s in batch['data_samples']:
                    s.set_field(torch.ones(1, 112, 112), 'gt_visibility')
            data = model.data_preprocessor(batch, False)
            with torch.no_grad():
                maps, _, neck_in = model._trunk(data['inputs'])
            grid = maps.shape[-1]
            feats.append(neck_in if isinstance(neck_in, tuple) else (neck_in, ))
            targets.append(resize_visibility(
                stack_gt_visibility(data['data_samples']), size or grid))
        feats = [torch.cat([f[k] for f in feats]) for k in range(len(feats[0]))]
        return feats, torch.cat(targets), grid

    # The backbone is frozen: its outputs are computed once (no flip).
    occ_f, occ_t, grid = features(occ, len(occ), False)
    clean_f, clean_t, _ = features(clean, min(len(clean), len(occ) // 2), True)
    print(f'features of {len(occ_t)} occluded and {len(clean_t)} clean faces '
          f'({time.time() - t0:.0f}s)', flush=True)
    g = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(neck.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr,
                                                total_steps=args.steps)
    stages = getattr(neck, 'reads', 'maps') == 'stages'
    for step in range(args.steps):
        io = torch.randint(len(occ_t), (n_occ, ), generator=g)
        ic = torch.randint(len(clean_t), (n_clean, ), generator=g)
        inp = [torch.cat([a[io], b[ic]]) for a, b in zip(occ_f, clean_f)]
        target = torch.cat([occ_t[io], clean_t[ic]])
        if stages:
            _, losses = neck.loss([inp], [target], grid_size=grid)
        else:
            _, losses = neck.loss([inp[0]], [target])
        opt.zero_grad()
        losses['loss'].backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == args.steps - 1:
            print(f'step {step} loss {losses["loss"].item():.4f} '
                  f'{time.time() - t0:.0f}s', flush=True)
    model.eval()
    atomic_save({'state_dict': model.state_dict(), 'meta': {}}, args.out)
    print(f'saved {args.out} ({time.time() - t0:.0f}s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
