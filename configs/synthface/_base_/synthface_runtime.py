# Runtime of the SynthFace demo: iteration-based logging for progress, a checkpoint
# every 100 iterations (only the newest is kept) and at the end, so a killed run of
# any config derived from these resumes with --resume instead of restarting.
# Validation runs once, after the last iteration, only to calibrate the checkpoint's
# thresholds (synthface_data.py); tools/test.py evaluates afterwards.
_base_ = ['../../_base_/default_runtime.py']
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=100,
                    max_keep_ckpts=1, save_last=True),
    visualization=dict(type='VisualizationHook', enable=False))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=False, window_size=25)
env_cfg = dict(mp_cfg=dict(mp_start_method='fork', opencv_num_threads=1))
