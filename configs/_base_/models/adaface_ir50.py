# AdaFace-only baseline on IR-50: the same recognizer, backbone and head as
# oaml_ir50.py, without QAConv and without the occlusion head.
model = dict(
    type='OAMLRecognizer',
    data_preprocessor=dict(type='FaceDataPreprocessor', channel_order='bgr'),
    backbone=dict(type='IResNet', depth=50, embedding_size=512),
    neck=None,
    head=dict(
        type='AdaFaceHead', in_channels=512, num_classes=10572, m=0.4,
        h=0.333, s=64.0, t_alpha=0.01),
    qaconv_head=None,
    # The only loss: full weight (OAML's 0.1 would just scale the learning rate).
    loss_weights=dict(adaface=1.0),
    test_cfg=dict(flip_test=True, return_feature_maps=False))
