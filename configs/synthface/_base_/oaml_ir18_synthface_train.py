# The training part of oaml_ir18_synthface.py: everything but its test sets
# (synthface_test_bins.py). A test config pairs it with any shipped test set, as
# oaml_ir18_synthface_ijbc.py does with IJB-C (docs/data_layout.md, "Test configs").
_base_ = [
    '../../_base_/models/oaml_ir18.py',
    './synthface_data.py',
    './synthface_schedule.py',
    './synthface_runtime.py',
]
model = dict(
    backbone=dict(width_mult=0.25, embedding_size=128, channels_last=True),
    neck=dict(in_channels=128, hidden_channels=32),
    # s = 16 from the sweep, as for the baseline.
    head=dict(in_channels=128, num_classes={{_base_.train_num_classes}},
              s=16.0),
    # Gated visibility; its stretch is test_cfg.vis_range below.
    qaconv_head=dict(in_channels=128, vis_mode='gate', half_test=False),
    # AdaFace : QAConv 0.1 : 0.9 (the original recipe's), the best split of the
    # loss-weight sweep at the demo's 500 iterations. Occlusion weight 1.0.
    loss_weights=dict(adaface=0.1, qaconv=0.9, occlusion=1.0),
    # QAConv learns on the main batch's true masks (medical-mask augmentation); the
    # occlusion head also learns from them, next to the occlusion stream.
    train_cfg=dict(qaconv_train_vis='gt', occ_on_main=True),
    # No flip test: it doubles the CPU time of evaluation (both models alike).
    # vis_range: the one calibration of the predicted visibility, stretched so that
    # cells predicted >= 0.7 visible count fully and cells <= 0.3 not at all
    # (docs/synthface.md, "Which visibility weighting"; docs/models.md, "Stretching
    # the maps").
    test_cfg=dict(flip_test=False, return_feature_maps=True, half_maps=True,
                  vis_range=(0.3, 0.7)))
# Peak learning rate and margin warm-up: the best of the sweep
# (projects/occlusion_study/sweep_synthface.py, its docs/synthface_sweep.md).
optim_wrapper = dict(optimizer=dict(lr=0.1))
# The hooks are also variables: a variant that lists its own hooks reuses them
# ({{_base_.occlusion_stream}}) or changes a copy
# (copy.deepcopy(_base_.occlusion_stream)) instead of repeating them
# (docs/data_layout.md, "Starting a new experiment by inheriting a config").
margin_warmup = dict(type='MarginWarmupHook', warmup_ratio=0.3)  # from the sweep
# The occlusion stream. Paths below occlusion_data_root (synthface_data.py):
# --cfg-options occlusion_data_root=DIR moves both.
occlusion_pipeline = [
    dict(type='FaceRandomFlip', prob=0.5),
    dict(type='PackFaceInputs'),
]
occlusion_stream = dict(
    type='DualLoaderHook',
    occluded_ratio=0.8,
    batch_size=16,
    occluded_dataloader=dict(
        num_workers=1,
        dataset=dict(
            type='OcclusionMaskDataset',
            data_root='data/synthface/occluded',
            pipeline=occlusion_pipeline)),
    clean_dataloader=dict(
        num_workers=0,
        dataset=dict(
            type='MXFaceDataset',
            data_root='data/synthface/train',
            pipeline=occlusion_pipeline)))
custom_hooks = [margin_warmup, occlusion_stream]

# End-of-training validation: the pair scores ThresholdCalibrationHook calibrates.
val_evaluator = [
    dict(type='VerificationMetric', dataset_name=name,
         branches=('adaface', 'qaconv', 'fused'), select_by_name=True,
         progress=False) for name in ['calib']
]
