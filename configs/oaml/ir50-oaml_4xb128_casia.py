# OAML on IR-50 trained on CASIA-WebFace (10,572 identities) instead of MS1MV2:
# ir50-oaml_4xb128_ms1mv2.py with the CASIA training set; validation, occlusion stream
# and schedule unchanged.
#   tools/dist_train.sh configs/oaml/ir50-oaml_4xb128_casia.py 4 --amp  # 4 x 128
_base_ = ['./ir50-oaml_4xb128_ms1mv2.py']
data_root = 'data/faces_webface_112x112'
train_num_classes = 10572
train_dataloader = dict(
    dataset=dict(data_root=data_root, num_classes=train_num_classes))
model = dict(head=dict(num_classes=train_num_classes))
