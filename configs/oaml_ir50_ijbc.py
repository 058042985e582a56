# Test OAML IR-50 on IJB-C: 1:1 TAR@FAR and 1:N for the adaface / qaconv / fused
# branches.
#   python tools/test.py configs/oaml_ir50_ijbc.py work_dirs/oaml_ir50/epoch_26.pth \
#       --out work_dirs/oaml_ir50/ijbc.json
#   tools/dist_test.sh configs/oaml_ir50_ijbc.py CHECKPOINT 4
_base_ = ['./oaml_ir50.py', './_base_/datasets/ijbc.py']
