# Fixed-iteration SGD schedule of the SynthFace demo (the AdaFace recipe shortened):
# linear warm-up over 5%, x0.1 at 70% and 90% of the iterations. The demo configs
# set the peak lr and the margin warm-up (MarginWarmupHook) chosen by the sweep.
# Budgets are iteration counts, never wall time, so results do not depend on load.
max_iters = 500
# GuardedOptimWrapper: a NaN/Inf loss or gradient skips the update (weights and BN
# statistics stay as they were); max_nonfinite_skips in a row stop the run with
# NonFiniteLossError and nonfinite_iter_{N}.pth (docs/reliability.md).
optim_wrapper = dict(
    type='GuardedOptimWrapper',
    max_nonfinite_skips=5,
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.05, by_epoch=False, begin=0,
         end=max_iters // 20),
    dict(type='MultiStepLR', by_epoch=False,
         milestones=[int(max_iters * 0.7), int(max_iters * 0.9)], gamma=0.1),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=10**9)
