# AdaFace-only baseline on IR-18.
_base_ = ['./adaface_ir50.py']
model = dict(backbone=dict(depth=18))
