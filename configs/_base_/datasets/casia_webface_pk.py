# CASIA-WebFace (insightface `faces_webface_112x112`: train.rec / train.idx /
# property): the MS1MV2 pipeline and sampler on the smaller set.
_base_ = ['./ms1mv2_pk.py']
data_root = 'data/faces_webface_112x112'
train_num_classes = 10572
train_dataloader = dict(
    dataset=dict(data_root=data_root, num_classes=train_num_classes))
