# Test the AdaFace-only IR-50 baseline on IJB-B (cosine branch only).
#   python tools/test.py configs/adaface_ir50_ijbb.py CHECKPOINT --out ijbb.json
_base_ = ['./adaface_ir50.py', './_base_/datasets/ijbb.py']
test_evaluator = dict(branches=('adaface', ))
