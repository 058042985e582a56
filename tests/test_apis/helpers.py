"""Tiny models, checkpoints and face images for the inference API tests."""
import os.path as osp

import cv2
import numpy as np
import torch

from oaml_mm.apis import FaceRecognizer
from oaml_mm.utils import atomic_save

#: A 2-layer-wide IR-18 (64-channel maps, 32-d embedding): fast on one core.
TINY_MODEL = dict(
    type='OAMLRecognizer',
    data_preprocessor=dict(type='FaceDataPreprocessor', channel_order='bgr'),
    backbone=dict(type='IResNet', depth=18, width_mult=0.125,
                  embedding_size=32),
    neck=dict(type='OcclusionHead', in_channels=64, hidden_channels=8),
    head=dict(type='AdaFaceHead', in_channels=32, num_classes=5),
    qaconv_head=dict(type='QAConvHead', in_channels=64, vis_mode='gate'),
    test_cfg=dict(flip_test=True, return_feature_maps=True, half_maps=True))

CALIBRATION = dict(
    far=1e-3, source='test', num_pairs=100, decision_branch='fused',
    fuse_weights=[0.5, 0.5],
    fuse_stats={'adaface': [0.1, 0.2], 'qaconv': [-1.0, 2.0]},
    branches={'adaface': dict(threshold=0.5, tar=0.9, far=1e-3),
              'qaconv': dict(threshold=1.0, tar=0.9, far=1e-3),
              'fused': dict(threshold=1.5, tar=0.95, far=1e-3)})


def write_config(path: str, model: dict = TINY_MODEL) -> str:
    with open(path, 'w') as f:
        f.write(f'default_scope = "oaml_mm"\nmodel = {model!r}\n')
    return path


def write_checkpoint(path: str, seed: int = 0, calibration=CALIBRATION,
                     model: dict = TINY_MODEL) -> FaceRecognizer:
    """Random tiny weights (BN statistics moved off their defaults) saved to path."""
    torch.manual_seed(seed)
    rec = FaceRecognizer(model)
    with torch.no_grad():
        for name, buf in rec.model.named_buffers():
            if name.endswith('running_var'):
                buf.uniform_(0.5, 2.0)
            elif name.endswith('running_mean'):
                buf.normal_(0, 0.1)
    meta = {} if calibration is None else {'oaml_thresholds': calibration}
    atomic_save({'state_dict': rec.model.state_dict(), 'meta': meta}, path)
    return rec


def face(seed: int, size: int = 112) -> np.ndarray:
    """An RGB uint8 image whose coarse pattern depends on ``seed``."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
    img = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)
    return img


def write_face(folder: str, name: str, seed: int) -> str:
    path = osp.join(folder, name)
    cv2.imwrite(path, cv2.cvtColor(face(seed), cv2.COLOR_RGB2BGR))
    return path


def flip_tensor_byte(path: str) -> None:
    """Flip one byte in the middle of the largest tensor of a zip torch file.

    The zip stays well-formed (its central directory and headers are
    untouched); only that member's CRC-32 no longer matches, as after a bit
    rot on disk or a bad copy.
    """
    import zipfile
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if '/data/' in i.filename),
                   key=lambda i: i.file_size)
    with open(path, 'r+b') as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(f.read(4), '<u2')
        pos = info.header_offset + 30 + int(name_len) + int(extra_len) + \
            info.file_size // 2
        f.seek(pos)
        byte = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([byte ^ 0x10]))
