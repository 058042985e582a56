# WebFace42M-style training set (Zhu et al., CVPR 2021: 2,059,906 identities, 42M
# aligned 112x112 faces): insightface's `.rec` release (train.rec / train.idx /
# property, as MS1MV2) with the MS1MV2 pipeline and P x K sampler. For an image-folder
# copy (<identity>/<image>.jpg) override the dataset:
#   --cfg-options train_dataloader.dataset.type=FaceImageFolder \
#       train_dataloader.dataset.data_root=/data/webface42m/images
# Layout: docs/data_layout.md ("WebFace42M, Glint360K").
_base_ = ['./ms1mv2_pk.py']
data_root = 'data/webface42m'
train_num_classes = 2059906
train_dataloader = dict(
    dataset=dict(data_root=data_root, num_classes=train_num_classes))
