# Test OAML IR-50 on TinyFace (rank-1/5/20 of the embedding branch):
#   python tools/test.py configs/oaml/ir50-oaml_test-tinyface.py CHECKPOINT
# --cfg-options test_data_root=DIR moves the data.
_base_ = ['./ir50-oaml_4xb128_ms1mv2.py', '../_base_/datasets/tinyface.py']
