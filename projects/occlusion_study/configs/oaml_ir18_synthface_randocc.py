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
# The data set list of synthface_data.py, with this pipeline (a list in a config
# replaces the base's list).
train_dataloader = dict(
    dataset=dict(datasets=[
        dict(type='MXFaceDataset',
             data_root='data/synthface/train',
             num_classes={{_base_.train_num_classes}},
             pipeline=train_pipeline),
        dict(type='OcclusionMaskDataset',
             data_root='data/synthface/occluded',
             pipeline=train_pipeline),
    ]))
# The base file's hooks, the clean part of the stream with random occluders.
custom_hooks = [
    dict(type='MarginWarmupHook', warmup_ratio=0.3),  # from the sweep
    dict(
        type='DualLoaderHook',
        occluded_ratio=0.8,
        batch_size=16,
        clean_occluders=['RandomOcclusion'],
        occluded_dataloader=dict(
            num_workers=1,
            dataset=dict(
                type='OcclusionMaskDataset',
                data_root='data/synthface/occluded',
                pipeline=[
                    dict(type='FaceRandomFlip', prob=0.5),
                    dict(type='PackFaceInputs')
                ])),
        clean_dataloader=dict(
            num_workers=0,
            dataset=dict(
                type='MXFaceDataset',
                data_root='data/synthface/train',
                pipeline=[
                    dict(random_occlusion, prob=0.5),
                    dict(type='FaceRandomFlip', prob=0.5),
                    dict(type='PackFaceInputs')
                ]))),
]
