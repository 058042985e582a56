# Test OAML IR-101 on IJB-C: 1:1 TAR@FAR and 1:N for the adaface / qaconv / fused
# branches.
#   python tools/test.py configs/oaml_ir101_ijbc.py work_dirs/oaml_ir101/epoch_26.pth \
#       --out work_dirs/oaml_ir101/ijbc.json
#   tools/dist_test.sh configs/oaml_ir101_ijbc.py CHECKPOINT 4
_base_ = ['./oaml_ir101.py', './_base_/datasets/ijbc.py']
