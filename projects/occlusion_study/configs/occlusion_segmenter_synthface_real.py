# The OcclusionSegmenter of configs/synthface/occlusion_segmenter_synthface.py,
# also trained on real clean faces so that it stops reading real skin, hair,
# teeth, glasses and backgrounds as occluders (visibility_predictors.md, same
# folder as this config's parent, "Real faces in training"):
#
# * the TRAIN part of the package-shipped real faces (real_faces.py: the LFW
#   subset's faces 0-49 and insightface's group photo; the test part and the three
#   portraits are never read), aligned by the package's MTCNN path, labelled all
#   visible, or with pasted medical masks / random occluders (exact masks);
# * drawn faces made to look like the real inputs: grey, low resolution and JPEG
#   in the first AppearanceJitter.
#
# Prepare the real faces once, then train (800 steps, the study's budget):
#   python projects/occlusion_study/real_faces.py prepare data/real_faces \
#       --extra insightface-0.7.3/insightface/data/images
#   python tools/train.py \
#       projects/occlusion_study/configs/occlusion_segmenter_synthface_real.py \
#       --work-dir work_dirs/segreal/seed0 --cfg-options randomness.seed=0
_base_ = ['../../../configs/synthface/occlusion_segmenter_synthface.py']
import copy  # noqa: E402  (after _base_, as mmengine reads it)

real_root = 'data/real_faces'
max_iters = 800

# What drawn faces lack and the real inputs have: grey photos, small faces
# upsampled, JPEG artefacts; in the first AppearanceJitter of the base's pipelines.
real_look = dict(grey_prob=0.2, low_res_range=(0.2, 1.0),
                 jpeg_quality=(30, 95))
occluded_pipeline = [dict(_base_.occluded_pipeline[0], **real_look),
                     *_base_.occluded_pipeline[1:]]
clean_pipeline = [dict(_base_.clean_pipeline[0], **real_look),
                  *_base_.clean_pipeline[1:]]
# Real faces: about half stay clean (all visible: the point of them), the rest
# get the same pasted occluders as the drawn clean faces.
real_pipeline = [
    dict(type='AppearanceJitter', prob=0.5, op_prob=0.3, **real_look),
    dict(type='MedicalMaskOcclusion', prob=0.15),
    dict(type='RandomOcclusion', prob=0.45, area_range=(0.03, 0.5)),
    dict(type='AppearanceJitter', prob=0.3, op_prob=0.3),
    dict(type='FaceRandomFlip', prob=0.5),
    _base_.pack,
]
# The base's drawn parts with these pipelines, and the real faces.
occluded_set, clean_set = copy.deepcopy(_base_.train_dataloader.dataset.datasets)
occluded_set.dataset.pipeline = occluded_pipeline
clean_set.pipeline = clean_pipeline
train_dataloader = dict(dataset=dict(datasets=[
    occluded_set,
    clean_set,
    # 55 real faces x 60: about a fifth of the draws.
    dict(type='RepeatDataset', times=60, dataset=dict(
        type='FaceImageFolder', data_root=real_root, ann_file='train.txt',
        pipeline=real_pipeline)),
]))
param_scheduler = [
    dict(type='OneCycleLR', eta_max=2e-3, total_steps=max_iters,
         by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=10**9)
