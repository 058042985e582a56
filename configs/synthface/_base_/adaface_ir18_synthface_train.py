# The training part of adaface_ir18_synthface.py: everything but its test sets
# (synthface_test_bins.py). A test config pairs it with any shipped test set, as
# adaface_ir18_synthface_ijbc.py does with IJB-C (docs/data_layout.md, "Test configs").
_base_ = [
    '../../_base_/models/adaface_ir18.py',
    './synthface_data.py',
    './synthface_schedule.py',
    './synthface_runtime.py',
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

# End-of-training validation: the pair scores ThresholdCalibrationHook calibrates.
val_evaluator = [
    dict(type='VerificationMetric', dataset_name=name, branches=('adaface', ),
         select_by_name=True, progress=False) for name in ['calib']
]
