# Alias kept for old commands: the config is adaface/ir50-adaface_4xb128_ms1mv2.py
# (docs/get_started.md, "Config names"). work_dirs/adaface_ir50/ and configs inheriting
# 'adaface_ir50.py' keep working; new configs should inherit the full name.
_base_ = ['./adaface/ir50-adaface_4xb128_ms1mv2.py']
