# Test OAML IR-50 on IJBB: 1:1 TAR@FAR and 1:N for the adaface / qaconv / fused
# branches. The model config plus the shipped IJBB test set, composed as two bases.
#   python tools/test.py configs/oaml/ir50-oaml_test-ijbb.py \
#       work_dirs/ir50-oaml_4xb128_ms1mv2/epoch_26.pth --out ijbb.json
#   tools/dist_test.sh configs/oaml/ir50-oaml_test-ijbb.py CHECKPOINT 4
_base_ = ['./ir50-oaml_4xb128_ms1mv2.py', '../_base_/datasets/ijbb.py']
