# Test the AdaFace-only IR-50 baseline on IJBB (cosine branch only).
#   python tools/test.py configs/adaface/ir50-adaface_test-ijbb.py CKPT --out ijbb.json
_base_ = ['./ir50-adaface_4xb128_ms1mv2.py', '../_base_/datasets/ijbb.py']
test_evaluator = dict(branches=('adaface', ))
