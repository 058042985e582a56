# The OAML paper's comparison point: a standard AdaFace model trained on clean faces
# only (no occluded images, no medical-mask augmentation). The paper reports its
# occluded-pair gain against such a model; adaface_ir18_synthface.py is the fair
# baseline (same data and occlusion augmentation as OAML). Everything else (narrow
# IR-18, learning rate, scale, sampler, iterations) is the fair baseline's.
#   python tools/train.py \
#       projects/occlusion_study/configs/adaface_ir18_synthface_cleanonly.py
_base_ = ['../../../configs/synthface/adaface_ir18_synthface.py']
clean_pipeline = [
    dict(type='FaceAugmenter', crop_prob=0.2, low_res_prob=0.2,
         photometric_prob=0.2),
    dict(type='FaceRandomFlip', prob=0.5),
    dict(type='PackFaceInputs'),
]
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='MXFaceDataset',
        data_root='data/synthface/train',
        num_classes={{_base_.train_num_classes}},
        pipeline=clean_pipeline))
