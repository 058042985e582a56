# The mini IJB-C of SynthFace (1:1 TAR@FAR, 1:N) for oaml_ir18_synthface.py:
#   python tools/test.py configs/synthface/oaml_ir18_synthface_ijbc.py \
#       work_dirs/oaml_ir18_synthface/iter_500.pth --out oaml_ijbc.json
# --cfg-options test_data_root=DIR moves the data (DIR/ijbc).
_base_ = ['./oaml_ir18_synthface.py']
test_data_root = 'data/synthface'
test_dataloader = dict(
    batch_size=128,
    dataset=dict(
        _delete_=True,
        type='IJBDataset',
        data_root='data/synthface/ijbc',
        subset='IJBC',
        pipeline=[
            dict(type='AlignFace5Points', image_size=(112, 112)),
            dict(type='PackFaceInputs'),
        ]))
test_evaluator = dict(
    _delete_=True,
    type='IJBMetric',
    dataset_name='ijbc',
    data_root='data/synthface/ijbc',
    subset='IJBC',
    gallery_files=('meta/ijbc_1N_gallery_G1.csv',
                   'meta/ijbc_1N_gallery_G2.csv'),
    probe_file='meta/ijbc_1N_probe_mixed.csv',
    branches=('adaface', 'qaconv', 'fused'),
    fuse_weights=(0.5, 0.5),
    # Plain and visibility-weighted templates in one pass (docs/evaluation.md,
    # "Template pooling"); the second set of keys ends in _vispool.
    pooling=('mean', 'visibility'))
