"""SynthFace jobs: what is rendered for each split, and in which process.

Work is cut into one job per (split, identity). A job draws everything from
:func:`~.identity.stream_rng` keyed by ``(seed, stream, identity, image)``, so its
result does not depend on which process runs it or when; results are collected in
job order, hence the files are byte-identical for any number of workers.
"""
import multiprocessing as mp
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from oaml_mm.datasets.transforms.formatting import visibility_to_grid
from oaml_mm.errors import ConfigError
from .heldout import HELDOUT_OCCLUSION_TYPES
from .identity import FaceIdentity, sample_identities, stream_rng
from .occluders import OCCLUSION_TYPES
from .render import (Nuisance, encode_jpeg, identity_texture, render_face,
                     sample_nuisance)

__all__ = [
    'SynthFaceConfig', 'TRAIN_OCCLUSION_MIX', 'VAL_OCCLUSION_MIX',
    'MASKED_PROBE_TYPES', 'HELDOUT_OCCLUSION_MIX', 'CALIB_OCCLUSION_MIX', 'run_jobs',
    'render_train', 'render_occluded', 'render_val', 'render_heldout',
    'render_calib', 'render_ijbc', 'contact_sheet', 'heldout_contact_sheet'
]

# Stream keys of stream_rng: one per purpose, never reused.
S_IDENTITY, S_TRAIN, S_OCCLUDED, S_VAL, S_IJBC, S_PAIRS, S_PREVIEW = range(7)
# Held-out and calibration sets: new keys, so that no earlier stream changes.
S_HELDOUT, S_CALIB, S_HELDOUT_PAIRS, S_HELDOUT_PREVIEW = range(7, 11)
_OCC_OFFSET = 1_000_000  # image key offset of occluder draws within a stream

#: Occlusion types of the training identities' occlusion stream (``occluded/``): mostly
#: niqab-style, as in the seed's niqab set, plus the other types.
TRAIN_OCCLUSION_MIX: Dict[str, float] = {
    'niqab': 0.6, 'medical_mask': 0.1, 'scarf': 0.1, 'hand': 0.1, 'sunglasses': 0.1
}
#: Occlusion types of the test images (``val/`` and the occluded part of ``ijbc/``).
VAL_OCCLUSION_MIX: Dict[str, float] = {
    'niqab': 0.3, 'medical_mask': 0.25, 'scarf': 0.15, 'hand': 0.15, 'sunglasses': 0.15
}
#: Probe types of ``masked.bin`` (clean vs. medical-mask or niqab).
MASKED_PROBE_TYPES = ('medical_mask', 'niqab')
#: Occlusion types of the held-out sets (``val/heldout_*.bin``): only the held-out
#: families of :mod:`.heldout`, equally often.
HELDOUT_OCCLUSION_MIX: Dict[str, float] = {t: 1.0 for t in HELDOUT_OCCLUSION_TYPES}
#: Occlusion types of the calibration set (``val/calib.bin``): the training families
#: only, mixed as in the test sets.
CALIB_OCCLUSION_MIX: Dict[str, float] = dict(VAL_OCCLUSION_MIX)


@dataclass(frozen=True)
class SynthFaceConfig:
    """Everything that determines a SynthFace data set.

    Args:
        identities (int): Training identities. Defaults to 400.
        images_per_id (int): Clean training images per identity. Defaults to 16.
        seed (int): Seed of every random draw. Defaults to 0.
        nuisance (float): Strength of the per-image nuisance, 0..1
            (:func:`~.render.sample_nuisance`). Defaults to 0.5.
        test_identities (int): Identities of ``val/`` and ``ijbc/``, disjoint from the
            training ones. Defaults to 200.
        occluded_per_id (int): Occluded images per training identity in
            ``occluded/``. Defaults to 4.
        val_images_per_id (int): Rendered images per test identity for ``val/``; each
            gives a clean and an occluded version. Defaults to 8.
        val_pairs (int): Pairs per verification ``.bin``: a multiple of 20 (10
            folds of half genuine, half impostor pairs); any other value is a
            :class:`ConfigError`, never rounded. Defaults to 3000.
        ijbc_subjects (int): Test identities in the mini IJB-C. Defaults to 60.
        ijbc_probe_templates (int): Probe templates per IJB-C subject. Defaults to 3.
        ijbc_occluded (float): Fraction of IJB-C images with an occluder.
            Defaults to 0.2.
        min_identity_distance (float): Near-duplicate threshold
            (:func:`~.identity.sample_identities`). Defaults to 1.5.
        heldout_identities (int, optional): Identities of the held-out sets
            (``val/heldout_*.bin``: style-B faces, held-out occluders), drawn after
            the test ones; 0 writes no held-out sets. Defaults to ``None``:
            ``min(test_identities, 100)``.
        calib_identities (int, optional): Identities of the calibration set
            (``val/calib.bin``: style-A faces, training occluders), drawn after the
            held-out ones; 0 writes no calibration set. Defaults to ``None``:
            ``min(test_identities, 100)``.
    """

    identities: int = 400
    images_per_id: int = 16
    seed: int = 0
    nuisance: float = 0.5
    test_identities: int = 200
    occluded_per_id: int = 4
    val_images_per_id: int = 8
    val_pairs: int = 3000
    ijbc_subjects: int = 60
    ijbc_probe_templates: int = 3
    ijbc_occluded: float = 0.2
    min_identity_distance: float = 1.5
    heldout_identities: Optional[int] = None
    calib_identities: Optional[int] = None

    def __post_init__(self) -> None:
        for name in ('heldout_identities', 'calib_identities'):
            if getattr(self, name) is None:  # frozen: resolve the default once
                object.__setattr__(self, name, min(self.test_identities, 100)
                                   if isinstance(self.test_identities, int) else 0)
        minimum = dict(identities=2, images_per_id=1, test_identities=2,
                       occluded_per_id=1, val_images_per_id=2, val_pairs=20,
                       ijbc_subjects=1, ijbc_probe_templates=1,
                       heldout_identities=0, calib_identities=0)
        for name, low in minimum.items():
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ConfigError(f'SynthFace: {name} must be an integer >= {low}, '
                                  f'got {value!r}')
        if self.val_pairs % 20:
            # 10 folds x (genuine, impostor) halves: rounding silently wrote
            # fewer pairs than asked (55 gave 40).
            low = self.val_pairs // 20 * 20  # >= 20: checked above
            raise ConfigError(
                'SynthFace: val_pairs must be a multiple of 20 (10 folds of half '
                f'genuine, half impostor pairs), got {self.val_pairs}; use '
                f'{low} or {low + 20}')
        if not 0.0 <= self.nuisance <= 1.5:
            raise ConfigError('SynthFace: nuisance must be in [0, 1.5], got '
                              f'{self.nuisance!r}')
        if not 0.0 <= self.ijbc_occluded <= 1.0:
            raise ConfigError('SynthFace: ijbc_occluded must be in [0, 1], got '
                              f'{self.ijbc_occluded!r}')

    def identities_all(self) -> List[FaceIdentity]:
        """Training identities (indices ``0..identities-1``), then the test ones."""
        return sample_identities(self.identities + self.test_identities, self.seed,
                                 self.min_identity_distance)

    def identity_splits(self) -> Dict[str, List[FaceIdentity]]:
        """Identities of every split: ``train``, ``test``, ``heldout``, ``calib``.

        The held-out and calibration identities are drawn after the training and
        test ones; :func:`~.identity.sample_identities` draws identity ``i`` the
        same whatever the total, so they do not change any earlier identity.
        """
        counts = (('train', self.identities), ('test', self.test_identities),
                  ('heldout', self.heldout_identities),
                  ('calib', self.calib_identities))
        idents = sample_identities(sum(n for _, n in counts), self.seed,
                                   self.min_identity_distance)
        out, start = {}, 0
        for name, n in counts:
            out[name] = idents[start:start + n]
            start += n
        return out


def _jpeg_roundtrip(img: np.ndarray, quality: int) -> Tuple[bytes, np.ndarray]:
    buf = encode_jpeg(img, quality)
    dec = cv2.cvtColor(cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR),
                       cv2.COLOR_BGR2RGB)
    return buf, dec


def _pick(rng: np.random.Generator, mix: Dict[str, float]) -> str:
    names = list(mix)
    p = np.asarray([mix[n] for n in names], np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def render_train(cfg: SynthFaceConfig, ident: FaceIdentity) -> List[bytes]:
    """JPEGs of the clean training images of one identity."""
    tex = identity_texture(ident)
    out = []
    for j in range(cfg.images_per_id):
        nuis = sample_nuisance(stream_rng(cfg.seed, S_TRAIN, ident.index, j),
                               cfg.nuisance)
        out.append(encode_jpeg(render_face(ident, nuis, texture=tex).image,
                               nuis.jpeg_quality))
    return out


def render_occluded(cfg: SynthFaceConfig,
                    ident: FaceIdentity) -> List[Tuple[str, np.ndarray, np.ndarray]]:
    """Occluded images of one training identity: ``(type, image, visibility)``.

    Images have been through JPEG at the image's quality (then decoded), masks are the
    exact [H,W] uint8 visibility (1 = visible).
    """
    tex = identity_texture(ident)
    out = []
    for j in range(cfg.occluded_per_id):
        rng = stream_rng(cfg.seed, S_OCCLUDED, ident.index, j)
        nuis = sample_nuisance(rng, cfg.nuisance)
        occ = _pick(rng, TRAIN_OCCLUSION_MIX)
        r = render_face(ident, nuis, occ,
                        stream_rng(cfg.seed, S_OCCLUDED, ident.index, _OCC_OFFSET + j),
                        texture=tex)
        _, img = _jpeg_roundtrip(r.image, nuis.jpeg_quality)
        out.append((occ, img, r.visibility))
    return out


@dataclass
class ValImage:
    """One rendered test image in its clean and occluded versions."""

    clean: bytes
    occluded: bytes
    occlusion: str
    visibility: np.ndarray  # float32 [7,7] of the occluded version


def render_val(cfg: SynthFaceConfig, ident: FaceIdentity) -> List[ValImage]:
    """Test images of one identity for the verification ``.bin`` files.

    Occlusion types are dealt from :data:`VAL_OCCLUSION_MIX` so that every identity
    has at least one medical-mask or niqab image when it has two or more images.
    """
    tex = identity_texture(ident)
    n = cfg.val_images_per_id
    rng = stream_rng(cfg.seed, S_VAL, ident.index, _OCC_OFFSET * 2)
    types = [_pick(rng, VAL_OCCLUSION_MIX) for _ in range(n)]
    if n >= 2 and not any(t in MASKED_PROBE_TYPES for t in types):
        types[int(rng.integers(n))] = MASKED_PROBE_TYPES[int(rng.integers(2))]
    out = []
    for j in range(n):
        nuis = sample_nuisance(stream_rng(cfg.seed, S_VAL, ident.index, j),
                               cfg.nuisance)
        r = render_face(ident, nuis, types[j],
                        stream_rng(cfg.seed, S_VAL, ident.index, _OCC_OFFSET + j),
                        texture=tex)
        out.append(ValImage(encode_jpeg(r.clean, nuis.jpeg_quality),
                            encode_jpeg(r.image, nuis.jpeg_quality), types[j],
                            visibility_to_grid(r.visibility)))
    return out


def _render_pairs_source(cfg: SynthFaceConfig, ident: FaceIdentity, stream: int,
                         mix: Dict[str, float], style: str) -> List[ValImage]:
    """Clean and occluded versions of ``val_images_per_id`` images, all from
    ``stream``; occlusion types dealt from ``mix``."""
    tex = identity_texture(ident)
    n = cfg.val_images_per_id
    rng = stream_rng(cfg.seed, stream, ident.index, _OCC_OFFSET * 2)
    types = [_pick(rng, mix) for _ in range(n)]
    out = []
    for j in range(n):
        nuis = sample_nuisance(stream_rng(cfg.seed, stream, ident.index, j),
                               cfg.nuisance)
        r = render_face(ident, nuis, types[j],
                        stream_rng(cfg.seed, stream, ident.index, _OCC_OFFSET + j),
                        texture=tex, style=style)
        out.append(ValImage(encode_jpeg(r.clean, nuis.jpeg_quality),
                            encode_jpeg(r.image, nuis.jpeg_quality), types[j],
                            visibility_to_grid(r.visibility)))
    return out


def render_heldout(cfg: SynthFaceConfig, ident: FaceIdentity) -> List[ValImage]:
    """Held-out images of one identity: style-B faces, clean and with a held-out
    occluder (:data:`HELDOUT_OCCLUSION_MIX`)."""
    return _render_pairs_source(cfg, ident, S_HELDOUT, HELDOUT_OCCLUSION_MIX, 'B')


def render_calib(cfg: SynthFaceConfig, ident: FaceIdentity) -> List[ValImage]:
    """Calibration images of one identity: style-A faces, clean and with a
    training occluder (:data:`CALIB_OCCLUSION_MIX`)."""
    return _render_pairs_source(cfg, ident, S_CALIB, CALIB_OCCLUSION_MIX, 'A')


@dataclass
class IJBImage:
    """One loose crop of the mini IJB-C."""

    jpeg: bytes
    template: int  # template number within the subject (0 = gallery)
    media: int  # media number within the subject
    landmarks: np.ndarray  # [5,2] in loose-crop pixels
    faceness: float
    box: Tuple[int, int, int, int]  # x, y, w, h of the face
    occlusion: str


def _loose_crop_affine(rng: np.random.Generator) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Aligned 112x112 frame -> an unaligned loose crop: scale, rotation, offset."""
    h = int(rng.integers(128, 201))
    w = int(np.clip(h * rng.uniform(0.8, 1.1), 120, 220))
    s = rng.uniform(0.9, 1.5)
    s = min(s, 0.95 * min(h, w) / 112)
    ang = rng.uniform(-20, 20)
    m = cv2.getRotationMatrix2D((56.0, 56.0), ang, s)
    half = 56 * s
    cxp = rng.uniform(min(half, w / 2), max(w - half, w / 2))
    cyp = rng.uniform(min(half, h / 2), max(h - half, h / 2))
    m[:, 2] += (cxp - 56.0, cyp - 56.0)
    return m, (h, w)


def render_ijbc(cfg: SynthFaceConfig, ident: FaceIdentity) -> List[IJBImage]:
    """Templates of one IJB-C subject: 1 gallery + ``ijbc_probe_templates`` probes.

    Each template has 1-3 media; a media is a still (one image) or a video (2-3
    frames sharing light, background and camera, with their own pose). Nuisance is
    stronger than in training (x1.4, IJB-C being the harder benchmark) and a fraction
    ``ijbc_occluded`` of the images carries an occluder.
    """
    tex = identity_texture(ident)
    rng = stream_rng(cfg.seed, S_IJBC, ident.index, _OCC_OFFSET * 2)
    strength = min(1.0, cfg.nuisance * 1.4)
    out = []
    key = 0
    media_no = 0
    for t in range(1 + cfg.ijbc_probe_templates):
        for _ in range(int(rng.integers(1, 4))):
            frames = 1 if rng.random() < 0.6 else int(rng.integers(2, 4))
            base: Optional[Nuisance] = None
            post, size = _loose_crop_affine(rng)
            for _f in range(frames):
                r_img = stream_rng(cfg.seed, S_IJBC, ident.index, key)
                nuis = sample_nuisance(r_img, strength)
                if base is None:
                    base = nuis
                else:  # a video frame: same scene and camera, new pose/expression
                    nuis = replace(base, yaw=nuis.yaw, pitch=nuis.pitch,
                                   roll=nuis.roll, shift=nuis.shift,
                                   landmark_noise=nuis.landmark_noise,
                                   smile=nuis.smile, mouth_open=nuis.mouth_open,
                                   eye_open=nuis.eye_open,
                                   seed=nuis.seed)
                occ = _pick(r_img, VAL_OCCLUSION_MIX) if r_img.random() < \
                    cfg.ijbc_occluded else 'none'
                r = render_face(ident, nuis, occ,
                                stream_rng(cfg.seed, S_IJBC, ident.index,
                                           _OCC_OFFSET + key),
                                out_size=size, post_affine=post, texture=tex)
                visible = float(r.visibility.mean()) if occ != 'none' else 1.0
                det = r.landmarks + r_img.normal(0, 0.8, (5, 2))
                faceness = float(np.clip(
                    0.995 - 0.12 * nuis.blur - 0.5 * (1 - visible) -
                    abs(r_img.normal(0, 0.03)), 0.05, 1.0))
                x0, y0 = det.min(0)
                x1, y1 = det.max(0)
                bw, bh = (x1 - x0) * 1.9, (y1 - y0) * 2.2
                box = (int(round(x0 - 0.45 * (bw - (x1 - x0)))),
                       int(round(y0 - 0.45 * (bh - (y1 - y0)))), int(round(bw)),
                       int(round(bh)))
                out.append(IJBImage(encode_jpeg(r.image, nuis.jpeg_quality), t,
                                    media_no, det.astype(np.float32), faceness,
                                    box, occ))
                key += 1
            media_no += 1
    return out


_WORKER_CFG: Optional[SynthFaceConfig] = None


def _init_worker(cfg: SynthFaceConfig) -> None:
    global _WORKER_CFG
    _WORKER_CFG = cfg
    cv2.setNumThreads(1)


def _run_one(job: Tuple[Callable, FaceIdentity]):
    fn, ident = job
    return fn(_WORKER_CFG, ident)


def run_jobs(cfg: SynthFaceConfig, jobs: Sequence[Tuple[Callable, FaceIdentity]],
             workers: int = 2,
             progress: Optional[Callable[[int, int], None]] = None) -> list:
    """Run ``fn(cfg, identity)`` for every job; results in job order.

    Args:
        cfg (SynthFaceConfig): The data set config.
        jobs (Sequence[tuple]): ``(function, identity)`` pairs; functions must be
            module-level (picklable).
        workers (int): Processes; 0 or 1 runs in this process.
        progress (callable, optional): Called as ``progress(done, total)``.

    Returns:
        list: One result per job.
    """
    total = len(jobs)
    results = []
    if workers <= 1:
        _init_worker(cfg)
        for i, job in enumerate(jobs):
            results.append(_run_one(job))
            if progress:
                progress(i + 1, total)
        return results
    # fork shares the imported modules (importing oaml_mm takes seconds); the jobs
    # use numpy and OpenCV only, with one OpenCV thread each.
    method = 'fork' if 'fork' in mp.get_all_start_methods() else 'spawn'
    with mp.get_context(method).Pool(workers, _init_worker, (cfg, )) as pool:
        for i, res in enumerate(pool.imap(_run_one, jobs, chunksize=4)):
            results.append(res)
            if progress:
                progress(i + 1, total)
    return results


def contact_sheet(seed: int = 0, nuisance: float = 0.5, identities: int = 6,
                  clean_per_id: int = 4, with_masks: bool = True) -> np.ndarray:
    """A preview grid: per identity, clean images then one image per occlusion type.

    Args:
        seed (int): Data set seed (the identities are the first training ones).
        nuisance (float): Nuisance strength.
        identities (int): Rows.
        clean_per_id (int): Clean images per row before the occluded ones.
        with_masks (bool): Tint occluded pixels red in a second copy of each
            occluded image, to check that masks match the occluders.

    Returns:
        numpy.ndarray: uint8 RGB image.
    """
    ids = sample_identities(identities, seed)
    rows = []
    occ_types = OCCLUSION_TYPES[1:]
    for ident in ids:
        tex = identity_texture(ident)
        tiles = []
        for j in range(clean_per_id):
            nuis = sample_nuisance(stream_rng(seed, S_PREVIEW, ident.index, j),
                                   nuisance)
            tiles.append(render_face(ident, nuis, texture=tex).image)
        for k, occ in enumerate(occ_types):
            key = 100 + k
            nuis = sample_nuisance(stream_rng(seed, S_PREVIEW, ident.index, key),
                                   nuisance)
            r = render_face(ident, nuis, occ,
                            stream_rng(seed, S_PREVIEW, ident.index, _OCC_OFFSET + key),
                            texture=tex)
            tiles += _preview_tiles(r, with_masks)
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def _preview_tiles(r, with_masks: bool) -> List[np.ndarray]:
    """An occluded preview image, and a copy with its occluded pixels tinted red."""
    tiles = [r.image]
    if with_masks:
        tint = r.image.copy()
        hidden = r.visibility == 0
        tint[hidden] = (0.5 * tint[hidden] + [127, 0, 0]).astype(np.uint8)
        tiles.append(tint)
    return tiles


def heldout_contact_sheet(seed: int = 0, nuisance: float = 0.5, identities: int = 4,
                          with_masks: bool = True) -> np.ndarray:
    """A preview grid of the held-out variation: per identity, the style-A face, the
    style-B face, then one style-B image per held-out occlusion type.

    Args:
        seed (int): Data set seed (the identities are the first training ones).
        nuisance (float): Nuisance strength.
        identities (int): Rows.
        with_masks (bool): Tint occluded pixels red in a second copy of each
            occluded image.

    Returns:
        numpy.ndarray: uint8 RGB image.
    """
    rows = []
    for ident in sample_identities(identities, seed):
        tex = identity_texture(ident)
        nuis = sample_nuisance(stream_rng(seed, S_HELDOUT_PREVIEW, ident.index, 0),
                               nuisance)
        tiles = [render_face(ident, nuis, texture=tex, style=st).image
                 for st in ('A', 'B')]
        for k, occ in enumerate(HELDOUT_OCCLUSION_TYPES):
            key = 100 + k
            nuis = sample_nuisance(
                stream_rng(seed, S_HELDOUT_PREVIEW, ident.index, key), nuisance)
            r = render_face(
                ident, nuis, occ,
                stream_rng(seed, S_HELDOUT_PREVIEW, ident.index, _OCC_OFFSET + key),
                texture=tex, style='B')
            tiles += _preview_tiles(r, with_masks)
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)
