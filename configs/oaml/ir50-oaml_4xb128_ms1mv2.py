# OAML on IR-50, trained on MS1MV2: AdaFace + QAConv + occlusion head, P x K batches
# with medical-mask augmentation, the niqab occlusion stream, validation on LFW /
# CFP-FP / AgeDB-30 / CALFW / CPLFW after every epoch (configs/oaml/README.md).
#
#   tools/dist_train.sh configs/oaml/ir50-oaml_4xb128_ms1mv2.py 4 --amp  # 4 x 128
#   python tools/train.py configs/oaml/ir50-oaml_4xb128_ms1mv2.py --cfg-options \
#       data_root=/data/faces_emore val_data_root=/data/faces_emore \
#       occlusion_data_root=/data/niqab
#
# Data roots and how to override them: docs/data_layout.md.
_base_ = [
    '../_base_/models/oaml_ir50.py',
    '../_base_/datasets/ms1mv2_pk.py',
    '../_base_/datasets/niqab_occlusion_stream.py',
    '../_base_/datasets/face_val_bins.py',
    '../_base_/schedules/sgd_adaface.py',
    '../_base_/default_runtime.py',
]

model = dict(head=dict(num_classes={{_base_.train_num_classes}}))


default_hooks = dict(
    checkpoint=dict(save_best='lfw/fused/accuracy', rule='greater'))
