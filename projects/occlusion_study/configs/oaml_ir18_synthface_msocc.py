# OAML on SynthFace with the multi-scale occlusion head (docs/models.md, "Multi-scale
# occlusion head"): the visibility is predicted from the detached maps of stages 2-4
# (28x28, 14x14, 7x7 at width 0.25: 32/64/128 channels), fused top-down into 28x28
# visibility logits trained with BCE + Dice against pixel-level masks, and
# area-averaged onto QAConv's 7x7 grid. Everything else is oaml_ir18_synthface.py.
# Pixel-level targets: PackFaceInputs keeps the masks at 112x112 (grid) in the main
# batch and the occlusion stream; the head brings them onto its 28x28 logits, QAConv's
# true-mask weighting onto its 7x7 grid (area averages, exact).
#   python tools/train.py projects/occlusion_study/configs/oaml_ir18_synthface_msocc.py
#   python tools/test.py projects/occlusion_study/configs/oaml_ir18_synthface_msocc.py \
#       work_dirs/oaml_ir18_synthface_msocc/iter_500.pth --out oaml_msocc.json
_base_ = ['../../../configs/synthface/oaml_ir18_synthface.py']
import copy  # noqa: E402  (after _base_, as mmengine reads it)

model = dict(
    neck=dict(
        _delete_=True,
        type='MultiScaleOcclusionHead',
        in_channels=(32, 64, 128),
        stages=(2, 3, 4),
        channels=32,
        out_size=28,
        loss=dict(type='PixelVisibilityLoss', bce_weight=1.0, dice_weight=1.0)))

pixel_grid = (112, 112)
train_pipeline = [
    dict(type='FaceAugmenter', crop_prob=0.2, low_res_prob=0.2,
         photometric_prob=0.2),
    dict(type='MedicalMaskOcclusion', prob=0.5),
    dict(type='FaceRandomFlip', prob=0.5),
    dict(type='PackFaceInputs', grid=pixel_grid),
]
# The data set list of synthface_data.py with this pipeline (a list in a config
# replaces the base's list).
train_dataloader = dict(dataset=dict(datasets=[
    dict(d, pipeline=train_pipeline)
    for d in _base_.train_dataloader.dataset.datasets
]))
# The base file's hooks, the occluded part of the stream with pixel-level masks.
occlusion_stream = copy.deepcopy(_base_.occlusion_stream)
occlusion_stream.occluded_dataloader.dataset.pipeline = [
    dict(type='FaceRandomFlip', prob=0.5),
    dict(type='PackFaceInputs', grid=pixel_grid),
]
custom_hooks = [{{_base_.margin_warmup}}, occlusion_stream]
