# IJB-C 1:1 (TAR@FAR 1e-6..1e-1) and 1:N (G1+G2 galleries, mixed probes) from the
# insightface IJB release layout (meta/ + loose_crop/, docs/data_layout.md).
test_data_root = 'data/IJB_release/IJBC'
test_pipeline = [
    dict(type='AlignFace5Points', image_size=(112, 112)),
    dict(type='PackFaceInputs'),
]
test_dataloader = dict(
    batch_size=256,
    num_workers=4,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='IJBDataset',
        data_root=test_data_root,
        subset='IJBC',
        pipeline=test_pipeline))
test_evaluator = dict(
    type='IJBMetric',
    dataset_name='ijbc',
    data_root=test_data_root,
    subset='IJBC',
    # 1:N switches itself off (with a log line) when these files are absent.
    gallery_files=('meta/ijbc_1N_gallery_G1.csv',
                   'meta/ijbc_1N_gallery_G2.csv'),
    probe_file='meta/ijbc_1N_probe_mixed.csv',
    branches=('adaface', 'qaconv', 'fused'),
    fuse_weights=(0.5, 0.5))
# FaceTestLoop binds the model to the metric (QAConv needs its matcher).
test_cfg = dict(type='FaceTestLoop')
