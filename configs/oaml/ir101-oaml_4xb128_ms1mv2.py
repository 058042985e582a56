# OAML on IR-101 (IR-100, units 3/13/30/3), MS1MV2: everything else as
# ir50-oaml_4xb128_ms1mv2.py.
#   tools/dist_train.sh configs/oaml/ir101-oaml_4xb128_ms1mv2.py 4 --amp  # 4 x 128
_base_ = [
    '../_base_/models/oaml_ir101.py',
    '../_base_/datasets/ms1mv2_pk.py',
    '../_base_/datasets/niqab_occlusion_stream.py',
    '../_base_/datasets/face_val_bins.py',
    '../_base_/schedules/sgd_adaface.py',
    '../_base_/default_runtime.py',
]

model = dict(head=dict(num_classes={{_base_.train_num_classes}}))
default_hooks = dict(
    checkpoint=dict(save_best='lfw/fused/accuracy', rule='greater'))
