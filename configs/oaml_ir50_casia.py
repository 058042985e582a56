# Short alias of oaml_ir50_4xb128_casia.py (the full name follows MMPretrain's
# {algorithm}_{backbone}_{N}xb{B}_{dataset}: 4 GPUs x 128 images each).
# Commands, work_dirs/ names and configs inheriting 'oaml_ir50_casia.py' keep working.
_base_ = ['./oaml_ir50_4xb128_casia.py']
