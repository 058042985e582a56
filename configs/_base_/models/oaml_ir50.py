# OAML on IR-50, the reference recipe: AdaFace embedding + QAConv matching weighted by a
# predicted 7x7 visibility map. Loss = 0.1 AdaFace + 0.9 QAConv + 0.1 occlusion.
# num_classes is CASIA-WebFace's; data set configs override it.
model = dict(
    type='OAMLRecognizer',
    # AdaFace weights expect BGR, (x / 255 - 0.5) / 0.5.
    data_preprocessor=dict(type='FaceDataPreprocessor', channel_order='bgr'),
    backbone=dict(type='IResNet', depth=50, embedding_size=512),
    neck=dict(type='OcclusionHead', in_channels=512),
    head=dict(
        type='AdaFaceHead', in_channels=512, num_classes=10572, m=0.4,
        h=0.333, s=64.0, t_alpha=0.01),
    qaconv_head=dict(
        type='QAConvHead',
        in_channels=512,
        vis_mode='multiply',  # 'gate' is the better scheme of docs/models.md
        half_test=True,
        losses=dict(
            pairwise=dict(type='PairwiseMatchingLoss', loss_weight=1.0),
            triplet=dict(
                type='BatchHardTripletLoss', margin=16.0, loss_weight=0.5))),
    loss_weights=dict(adaface=0.1, qaconv=0.9, occlusion=0.1),
    train_cfg=dict(qaconv_train_vis='pred', occ_on_main=False),
    test_cfg=dict(flip_test=True, return_feature_maps=True, half_maps=True))
