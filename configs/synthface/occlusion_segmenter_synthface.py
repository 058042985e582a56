# OcclusionSegmenter (docs/models.md, "Occlusion segmenter") trained on its own on
# SynthFace: a 0.33M-parameter encoder-decoder that predicts visibility from the
# aligned image at 28x28, for any recognizer to load (frozen or fine-tuned):
#   python tools/train.py configs/synthface/occlusion_segmenter_synthface.py
#   -> work_dirs/occlusion_segmenter_synthface/iter_3000.pth
# then configs/synthface/oaml_ir18_synthface_segmenter.py plugs it into OAML.
#
# Training data that teaches "occluder", not "these occluders": half the batches'
# images are the occluded set (training occluder families, true masks), half clean
# training faces of which 60 % get random occluders anywhere (RandomOcclusion, eyes
# included) and 15 % a medical mask; the rest stay clean, labelled all visible. Face
# and occluder appearance is randomised (AppearanceJitter before and after the
# occluders). Held-out occluder families, face style B and the calibration
# identities are never read. Targets are the masks area-pooled to 28x28 (BCE).
_base_ = ['../_base_/default_runtime.py']
data_root = 'data/synthface'
max_iters = 3000

model = dict(
    type='VisibilitySegmentor',
    segmenter=dict(type='OcclusionSegmenter', channels=(16, 32, 64, 96)),
    # The recognizers' preprocessing (FaceDataPreprocessor, BGR, +-1).
    data_preprocessor=dict(type='FaceDataPreprocessor', channel_order='bgr'))

pack = dict(type='PackFaceInputs', grid=(28, 28))
occluded_pipeline = [
    dict(type='AppearanceJitter', prob=0.8),
    dict(type='RandomOcclusion', prob=0.3, area_range=(0.03, 0.4)),
    dict(type='AppearanceJitter', prob=0.3, op_prob=0.3),
    dict(type='FaceRandomFlip', prob=0.5),
    pack,
]
clean_pipeline = [
    dict(type='AppearanceJitter', prob=0.8),
    dict(type='MedicalMaskOcclusion', prob=0.15),
    dict(type='RandomOcclusion', prob=0.6, area_range=(0.03, 0.5)),
    dict(type='AppearanceJitter', prob=0.3, op_prob=0.3),
    dict(type='FaceRandomFlip', prob=0.5),
    pack,
]
train_dataloader = dict(
    batch_size=32,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='ConcatDataset',
        ignore_keys=['num_classes', 'dataset_name', 'num_images', 'format'],
        datasets=[
            # 1,600 occluded images x 4 = as many draws as the 6,400 clean faces.
            dict(type='RepeatDataset', times=4, dataset=dict(
                type='OcclusionMaskDataset',
                data_root=f'{data_root}/occluded',
                pipeline=occluded_pipeline)),
            dict(type='MXFaceDataset', data_root=f'{data_root}/train',
                 num_classes=400, pipeline=clean_pipeline),
        ]))

optim_wrapper = dict(
    type='GuardedOptimWrapper',
    max_nonfinite_skips=5,
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = [
    dict(type='OneCycleLR', eta_max=2e-3, total_steps=max_iters,
         by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=10**9)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    # Every 100 iterations (the newest kept): a killed run resumes (--resume).
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=100,
                    max_keep_ckpts=1, save_last=True),
    threshold_calibration=None)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=False, window_size=100)
env_cfg = dict(mp_cfg=dict(mp_start_method='fork', opencv_num_threads=1))
