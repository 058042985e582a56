# OAML on IR-50 trained on WebFace42M (2.06M identities) with the margin head sharded
# over the ranks (PartialFCHead, Partial FC: An et al., ICCVW 2021): each of the 8
# GPUs holds 1/8 of the 2.06M x 512 class centres (528 MB of fp32 weights instead
# of 4.2 GB) and scores 10% of its shard per step, plus every identity of the global
# batch. When to use it and what sample_rate trades: docs/partial_fc.md.
#
#   tools/dist_train.sh configs/oaml/ir50-oaml-pfc_8xb128_webface42m.py 8 --amp
#
# Data layout (.rec or image folders) and overrides: docs/data_layout.md.
_base_ = [
    '../_base_/models/oaml_ir50.py',
    '../_base_/datasets/webface42m_pk.py',
    '../_base_/datasets/niqab_occlusion_stream.py',
    '../_base_/datasets/face_val_bins.py',
    '../_base_/schedules/sgd_adaface.py',
    '../_base_/default_runtime.py',
]

model = dict(
    head=dict(
        _delete_=True,
        type='PartialFCHead',
        in_channels=512,
        num_classes={{_base_.train_num_classes}},
        sample_rate=0.1,
        margin_head=dict(type='AdaFaceHead', m=0.4, h=0.333, s=64.0,
                         t_alpha=0.01)))

# The schedule is the AdaFace recipe for a total batch of 512; 8 x 128 = 1024:
# tools/dist_train.sh ... --auto-scale-lr doubles the learning rate.
auto_scale_lr = dict(base_batch_size=512)
default_hooks = dict(
    checkpoint=dict(save_best='lfw/fused/accuracy', rule='greater'))
