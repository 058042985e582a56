# AdaFace-only baseline on IR-101, MS1MV2 (published: IJB-B 95.67, IJB-C 96.89
# TAR@FAR=1e-4). Everything else as ir50-adaface_4xb128_ms1mv2.py.
_base_ = ['./ir50-adaface_4xb128_ms1mv2.py']
model = dict(backbone=dict(depth=101))
