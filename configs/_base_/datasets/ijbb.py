# IJB-B 1:1 and 1:N (S1+S2 galleries): the IJB-C test set config on the IJB-B files.
_base_ = ['./ijbc.py']
test_data_root = 'data/IJB_release/IJBB'
test_dataloader = dict(
    dataset=dict(data_root=test_data_root, subset='IJBB'))
test_evaluator = dict(
    dataset_name='ijbb',
    data_root=test_data_root,
    subset='IJBB',
    gallery_files=('meta/ijbb_1N_gallery_S1.csv',
                   'meta/ijbb_1N_gallery_S2.csv'),
    probe_file='meta/ijbb_1N_probe_mixed.csv')
# FaceTestLoop binds the model to the metric (QAConv needs its matcher).
test_cfg = dict(type='FaceTestLoop')
