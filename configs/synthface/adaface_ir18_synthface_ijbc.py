# The mini IJB-C of SynthFace (1:1 TAR@FAR, 1:N) for adaface_ir18_synthface.py: its
# training part and the shipped IJB-C test set as two bases, moved to SynthFace's
# folder (docs/data_layout.md, "Test configs").
#   python tools/test.py configs/synthface/adaface_ir18_synthface_ijbc.py \
#       work_dirs/adaface_ir18_synthface/iter_500.pth --out adaface_ijbc.json
# --cfg-options test_data_root=DIR moves the data (DIR/ijbc).
_base_ = [
    './_base_/adaface_ir18_synthface_train.py',
    '../_base_/datasets/ijbc.py',
]
test_data_root = 'data/synthface'
test_dataloader = dict(
    batch_size=128, num_workers=0,
    dataset=dict(data_root=f'{test_data_root}/ijbc'))
# Only the cosine branch exists without a QAConv head.
test_evaluator = dict(data_root=f'{test_data_root}/ijbc', branches=('adaface', ))
# The templates reuse images: one forward each.
test_cfg = dict(dedupe=True)
