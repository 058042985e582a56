# OAML on SynthFace with random occluders (capability 1 of the occlusion study): the
# occlusion head and QAConv's true-mask weighting also learn from RandomOcclusion
# (docs/synthface.md, "Random occluders"): polygons, ellipses, noise blobs, strokes and
# rounded rectangles with solid, gradient, noise, stripe, checker or copied-face
# textures, anywhere on the face, 5-50% of it, with their exact masks. None of them is
# a SynthFace occluder drawing, so the held-out occluder families stay unseen.
# Everything else is oaml_ir18_synthface.py.
# - main batch: RandomOcclusion(0.3) after the medical masks (a face may carry both;
#   its mask is the product), so qaconv_train_vis='gt' and occ_on_main see them;
# - occlusion stream: its clean part (20%) gets RandomOcclusion(0.5); those faces keep
#   their exact mask as the head's target (DualLoaderHook clean_occluders), the others
#   stay all-ones targets, so the head still learns that clean faces are visible.
#   python tools/train.py \
#       projects/occlusion_study/configs/oaml_ir18_synthface_randocc.py
#   python tools/test.py \
#       projects/occlusion_study/configs/oaml_ir18_synthface_randocc.py \
#       work_dirs/oaml_ir18_synthface_randocc/iter_500.pth --out oaml_randocc.json
_base_ = ['../../../configs/synthface/oaml_ir18_synthface.py']
import copy  # noqa: E402  (after _base_, as mmengine reads it)

random_occlusion = dict(type='RandomOcclusion', max_occluders=3,
                        area_range=(0.05, 0.5))
train_pipeline = [
    dict(type='FaceAugmenter', crop_prob=0.2, low_res_prob=0.2,
         photometric_prob=0.2),
    dict(type='MedicalMaskOcclusion', prob=0.5),
    dict(random_occlusion, prob=0.3),
    dict(type='FaceRandomFlip', prob=0.5),
    dict(type='PackFaceInputs'),
]
# The data set list of synthface_data.py with this pipeline (a list in a config
# replaces the base's list).
train_dataloader = dict(dataset=dict(datasets=[
    dict(d, pipeline=train_pipeline)
    for d in _base_.train_dataloader.dataset.datasets
]))
# The base file's hooks, the clean part of the stream with random occluders.
occlusion_stream = copy.deepcopy(_base_.occlusion_stream)
occlusion_stream.clean_occluders = ['RandomOcclusion']
occlusion_stream.clean_dataloader.dataset.pipeline = [
    dict(random_occlusion, prob=0.5), *_base_.occlusion_pipeline]
custom_hooks = [{{_base_.margin_warmup}}, occlusion_stream]
