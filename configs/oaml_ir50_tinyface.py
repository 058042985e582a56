# Test OAML IR-50 on TinyFace (rank-1/5/20 of the embedding branch):
#   python tools/test.py configs/oaml_ir50_tinyface.py work_dirs/oaml_ir50/epoch_26.pth
# --cfg-options test_data_root=DIR moves the data.
_base_ = ['./oaml_ir50.py', './_base_/datasets/tinyface.py']
