# AdaFace-only baseline on SynthFace: narrow IR-18 (width 0.25, 128-d, ~1.5M
# parameters) sized for a 2-core CPU. Same data, occlusion augmentation and number of
# iterations as oaml_ir18_synthface.py; its learning rate, margin warm-up, AdaFace scale
# and training-batch sampler come from projects/occlusion_study/sweep_synthface.py
# (projects/occlusion_study/docs/synthface_sweep.md).
#   python tools/train.py configs/synthface/adaface_ir18_synthface.py
#   python tools/test.py configs/synthface/adaface_ir18_synthface.py \
#       work_dirs/adaface_ir18_synthface/iter_500.pth --out adaface.json
_base_ = [
    '../_base_/models/adaface_ir18.py',
    './_base_/synthface_data.py',
    './_base_/synthface_schedule.py',
    './_base_/synthface_runtime.py',
]
model = dict(
    backbone=dict(width_mult=0.25, embedding_size=128, channels_last=True),
    # s = 16 from the sweep: at s = 64 the 400-class head stays at its chance-level
    # loss for the whole budget (projects/occlusion_study/docs/synthface_sweep.md).
    head=dict(in_channels=128, num_classes={{_base_.train_num_classes}},
              s=16.0),
    # No flip test: it doubles the CPU time of evaluation (both models alike).
    test_cfg=dict(flip_test=False, return_feature_maps=False))
# Peak learning rate, margin warm-up and sampler: the best of the sweep
# (projects/occlusion_study/sweep_synthface.py, its docs/synthface_sweep.md).
optim_wrapper = dict(optimizer=dict(lr=0.2))
# Identity-diverse batches (32 people each) from the sweep: with P x K batches of 8
# people the classifier barely moves in 500 iterations.
train_dataloader = dict(sampler=dict(_delete_=True, type='DefaultSampler',
                                     shuffle=True))
custom_hooks = [
    dict(type='MarginWarmupHook', warmup_ratio=0.3),  # from the sweep
]

# tools/test.py: the three verification sets (cosine branch only).
test_dataloader = {{_base_.bin_dataloader}}
# End-of-training validation: the pair scores ThresholdCalibrationHook calibrates.
val_evaluator = [
    dict(type='VerificationMetric', dataset_name=name, branches=('adaface', ),
         select_by_name=True, progress=False) for name in ['calib']
]
test_evaluator = [
    dict(type='VerificationMetric', dataset_name=name, branches=('adaface', ),
         select_by_name=True) for name in [
        'clean', 'masked', 'occluded', 'heldout_clean', 'heldout_masked',
        'heldout_occluded'
    ]
]
# The .bin pairs reuse images (42,000 slots, 6,339 distinct): one forward each.
test_cfg = dict(type='FaceTestLoop', dedupe=True)
