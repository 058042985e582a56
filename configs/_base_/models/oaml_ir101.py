# OAML on IR-101 (= IR-100, units 3/13/30/3).
_base_ = ['./oaml_ir50.py']
model = dict(backbone=dict(depth=101))
