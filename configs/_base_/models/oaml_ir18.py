# OAML on IR-18: the IR-50 model with a shallower backbone.
_base_ = ['./oaml_ir50.py']
model = dict(backbone=dict(depth=18))
