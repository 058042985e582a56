"""A SynthFace stand-in of TinyFace's test layout (low-resolution probes, distractors).

Writes ``<out>/Testing_Set/{Probe,Gallery_Match,Gallery_Distractor}`` the way the
TinyFace release lays them out (Cheng, Zhu & Gong, ACCV 2018): probe and match files
named ``<subject>_<n>.jpg``, distractors of people who are never probed. The people are
SynthFace's *test* identities (disjoint from the training ones, the same ones
``val/`` uses), so a model trained on SynthFace's ``train/`` has never seen them.
Every image is rendered at 112 x 112 with SynthFace's nuisance and then downscaled to
a native low resolution (``min_side``..``max_side`` pixels, aspect kept, area
interpolation) before JPEG encoding, as TinyFace's faces (about 20 x 16 pixels on
average) come from the camera; :class:`~oaml_mm.datasets.TinyFaceDataset` resizes
them back to the model's input.
"""
import os
import os.path as osp
from typing import Dict, Optional

import cv2
import numpy as np

from oaml_mm.errors import ConfigError
from .generator import SynthFaceConfig
from .identity import stream_rng
from .render import encode_jpeg, identity_texture, render_face, sample_nuisance

__all__ = ['write_tinyface_standin']

#: Stream id of the stand-in's draws (the generator's streams are 0..6).
S_TINYFACE = 101


def _low_res(img: np.ndarray, rng: np.random.Generator, min_side: int,
             max_side: int) -> np.ndarray:
    h = int(rng.integers(min_side, max_side + 1))
    w = max(4, int(round(h * img.shape[1] / img.shape[0] * rng.uniform(0.8, 1.0))))
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def write_tinyface_standin(out_dir: str,
                           cfg: Optional[SynthFaceConfig] = None,
                           subjects: int = 50,
                           distractor_identities: int = 100,
                           probes_per_subject: int = 2,
                           matches_per_subject: int = 1,
                           distractors_per_identity: int = 2,
                           min_side: int = 14,
                           max_side: int = 32) -> Dict[str, int]:
    """Write the TinyFace-layout stand-in; returns the image count of each folder.

    Args:
        out_dir (str): Output folder (``Testing_Set/`` is created inside).
        cfg (SynthFaceConfig, optional): The SynthFace set whose test identities
            are used (seed, nuisance, identity counts). Defaults to the demo's.
        subjects (int): Probed people. Defaults to 50.
        distractor_identities (int): People only in the distractor gallery.
            Defaults to 100.
        probes_per_subject (int): Probe images per subject. Defaults to 2.
        matches_per_subject (int): Gallery-match images per subject. Defaults to 1.
        distractors_per_identity (int): Images per distractor person. Defaults to 2.
        min_side (int): Smallest image height in pixels. Defaults to 14.
        max_side (int): Largest image height in pixels. Defaults to 32.

    Returns:
        dict: ``{'Probe': n, 'Gallery_Match': n, 'Gallery_Distractor': n}``.

    Raises:
        ConfigError: More people asked for than ``cfg.test_identities``, or bad
            counts / sizes.
    """
    cfg = SynthFaceConfig() if cfg is None else cfg
    if subjects < 1 or distractor_identities < 0 or probes_per_subject < 1 or \
            matches_per_subject < 1 or distractors_per_identity < 1:
        raise ConfigError('TinyFace stand-in: counts must be >= 1 '
                          '(distractor_identities >= 0)')
    if not 4 <= min_side <= max_side <= 112:
        raise ConfigError(f'TinyFace stand-in: need 4 <= min_side ({min_side}) '
                          f'<= max_side ({max_side}) <= 112')
    if subjects + distractor_identities > cfg.test_identities:
        raise ConfigError(
            f'TinyFace stand-in: {subjects} subjects + {distractor_identities} '
            f'distractor people exceed the {cfg.test_identities} SynthFace test '
            'identities (SynthFaceConfig.test_identities)')
    people = cfg.identities_all()[cfg.identities:]
    root = osp.join(out_dir, 'Testing_Set')
    counts = {}

    def render(ident, j: int) -> bytes:
        rng = stream_rng(cfg.seed, S_TINYFACE, ident.index, j)
        nuis = sample_nuisance(rng, cfg.nuisance)
        img = render_face(ident, nuis, texture=identity_texture(ident)).image
        return encode_jpeg(_low_res(img, rng, min_side, max_side),
                           nuis.jpeg_quality)

    plan = [('Probe', people[:subjects], probes_per_subject, 0),
            ('Gallery_Match', people[:subjects], matches_per_subject,
             probes_per_subject),
            ('Gallery_Distractor',
             people[subjects:subjects + distractor_identities],
             distractors_per_identity, 0)]
    for role, who, per, offset in plan:
        folder = osp.join(root, role)
        os.makedirs(folder, exist_ok=True)
        n = 0
        for ident in who:
            for j in range(per):
                # Subjects are numbered from 1, as in the release.
                name = f'{ident.index - cfg.identities + 1}_{j + 1}.jpg' \
                    if role != 'Gallery_Distractor' else \
                    f'd{ident.index - cfg.identities + 1}_{j + 1}.jpg'
                with open(osp.join(folder, name), 'wb') as f:
                    f.write(render(ident, offset + j))
                n += 1
        counts[role] = n
    return counts
