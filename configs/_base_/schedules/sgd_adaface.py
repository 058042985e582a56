# The AdaFace recipe: SGD momentum 0.9, wd 5e-4 (none on BN), lr 0.1, linear warm-up,
# x0.1 at epochs 12/20/24 of 26.
# GuardedOptimWrapper: a NaN/Inf loss or gradient skips the update (weights and BN
# statistics stay as they were); max_nonfinite_skips in a row stop the run with
# NonFiniteLossError and nonfinite_iter_{N}.pth (docs/reliability.md).
optim_wrapper = dict(
    type='GuardedOptimWrapper',
    max_nonfinite_skips=5,
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='MultiStepLR', by_epoch=True, milestones=[12, 20, 24],
         gamma=0.1),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=26, val_interval=1)
# The val/test loops come with the data sets that need them
# (_base_/datasets/face_val_bins.py, ijbb.py, ijbc.py): a training config without a
# test set must not carry a test loop.
# Batch 512 in total (e.g. 4 GPUs x 128): `--auto-scale-lr` rescales lr from it.
auto_scale_lr = dict(base_batch_size=512, enable=False)
