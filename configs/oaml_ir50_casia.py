# Alias kept for old commands: the config is oaml/ir50-oaml_4xb128_casia.py
# (docs/get_started.md, "Config names"). work_dirs/oaml_ir50_casia/ and configs
# inheriting 'oaml_ir50_casia.py' keep working; new configs inherit the full name.
_base_ = ['./oaml/ir50-oaml_4xb128_casia.py']
