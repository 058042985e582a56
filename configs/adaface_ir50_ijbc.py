# Test the AdaFace-only IR-50 baseline on IJB-C (cosine branch only).
#   python tools/test.py configs/adaface_ir50_ijbc.py CHECKPOINT --out ijbc.json
_base_ = ['./adaface_ir50.py', './_base_/datasets/ijbc.py']
test_evaluator = dict(branches=('adaface', ))
