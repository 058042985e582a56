# AdaFace-only baseline on IR-50, MS1MV2: the OAML recipe without QAConv, the
# occlusion head and the occlusion stream. Same data, augmentation (medical masks
# included), sampler and schedule as configs/oaml/ir50-oaml_4xb128_ms1mv2.py, so the
# two compare fairly (configs/adaface/README.md).
#   tools/dist_train.sh configs/adaface/ir50-adaface_4xb128_ms1mv2.py 4 --amp
_base_ = [
    '../_base_/models/adaface_ir50.py',
    '../_base_/datasets/ms1mv2_pk.py',
    '../_base_/datasets/face_val_bins.py',
    '../_base_/schedules/sgd_adaface.py',
    '../_base_/default_runtime.py',
]

model = dict(head=dict(num_classes={{_base_.train_num_classes}}))
# Only the cosine branch exists without a QAConv head.
val_evaluator = [
    dict(type='VerificationMetric', dataset_name=name, branches=('adaface', ))
    for name in ['lfw', 'cfp_fp', 'agedb_30', 'calfw', 'cplfw']
]
default_hooks = dict(
    checkpoint=dict(save_best='lfw/adaface/accuracy', rule='greater'))
