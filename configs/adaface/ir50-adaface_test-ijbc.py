# Test the AdaFace-only IR-50 baseline on IJBC (cosine branch only).
#   python tools/test.py configs/adaface/ir50-adaface_test-ijbc.py CKPT --out ijbc.json
_base_ = ['./ir50-adaface_4xb128_ms1mv2.py', '../_base_/datasets/ijbc.py']
test_evaluator = dict(branches=('adaface', ))
