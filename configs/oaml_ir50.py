# Alias kept for old commands: the config is oaml/ir50-oaml_4xb128_ms1mv2.py
# (docs/get_started.md, "Config names"). work_dirs/oaml_ir50/ and configs inheriting
# 'oaml_ir50.py' keep working; new configs should inherit the full name.
_base_ = ['./oaml/ir50-oaml_4xb128_ms1mv2.py']
