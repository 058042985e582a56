# The SynthFace stand-in of TinyFace (make_synthface.py --tinyface writes it to
# data/synthface/tinyface) for oaml_ir18_synthface.py:
#   python tools/test.py configs/synthface/oaml_ir18_synthface_tinyface.py \
#       work_dirs/oaml_ir18_synthface/iter_500.pth
# --cfg-options test_data_root=DIR moves the data (DIR/tinyface).
_base_ = ['./oaml_ir18_synthface.py']
test_dataloader = dict(
    batch_size=128,
    dataset=dict(
        _delete_=True,
        type='TinyFaceDataset',
        data_root='data/synthface/tinyface',
        test_dir='Testing_Set',
        pipeline=[dict(type='PackFaceInputs')]))
test_evaluator = dict(_delete_=True, type='TinyFaceMetric', ranks=(1, 5, 20))
