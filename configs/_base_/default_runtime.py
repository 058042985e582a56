# Runtime defaults shared by every oaml_mm config.
default_scope = 'oaml_mm'
# OAMLRunner: atomic weights-only checkpoints, exact resume, CPU (gloo) DDP.
runner_type = 'OAMLRunner'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook', interval=1, max_keep_ckpts=3,
        save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
    # Same/different thresholds at FAR 1e-3 from the validation pairs, stored in
    # checkpoint['meta']['oaml_thresholds'] (docs/inference.md); idle without
    # validation.
    threshold_calibration=dict(type='ThresholdCalibrationHook', far=1e-3),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # OAMLRunner switches to gloo when the machine has no CUDA.
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)

log_processor = dict(by_epoch=True, window_size=50)
log_level = 'INFO'

load_from = None
resume = False

# `deterministic=True` trades speed for bit-exact reruns on GPU.
randomness = dict(seed=0, deterministic=False)
