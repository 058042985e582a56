# Test OAML IR-101 on IJBC: 1:1 TAR@FAR and 1:N for the adaface / qaconv / fused
# branches. The model config plus the shipped IJBC test set, composed as two bases.
#   python tools/test.py configs/oaml/ir101-oaml_test-ijbc.py \
#       work_dirs/ir101-oaml_4xb128_ms1mv2/epoch_26.pth --out ijbc.json
#   tools/dist_test.sh configs/oaml/ir101-oaml_test-ijbc.py CHECKPOINT 4
_base_ = ['./ir101-oaml_4xb128_ms1mv2.py', '../_base_/datasets/ijbc.py']
