"""Writing SynthFace in every format oaml_mm reads.

Layout of ``DIR`` (see ``docs/synthface.md``)::

    DIR/synthface.json                 arguments, seed, counts, version (written last)
    DIR/train/{train.rec,train.idx,property}      insightface RecordIO, clean images
    DIR/occluded/{images,masks}/<id>/<nn>_<type>.{jpg,png} + labels.txt
                                       OcclusionMaskDataset layout, training identities
    DIR/val/{clean,masked,occluded}.bin            verification pairs, test identities
    DIR/val/<name>.vis.npy             float16 [2N,7,7] true visibility of each image
    DIR/val/<name>.types.txt           occlusion type of each image, one per line
    DIR/val/<name>.labels.npy          int64 [2N] identity of each image
    DIR/val/heldout_{clean,masked,occluded}.bin + side files
                                       held-out sets: style-B faces, held-out
                                       occluders, identities after the test ones
    DIR/val/calib.bin + side files     calibration set: style-A faces, training
                                       occluders, identities after the held-out ones
    DIR/ijbc/meta/ijbc_face_tid_mid.txt, ijbc_template_pair_label.txt,
              ijbc_name_5pts_score.txt, ijbc_1N_gallery_G1.csv, ijbc_1N_gallery_G2.csv,
              ijbc_1N_probe_mixed.csv
    DIR/ijbc/loose_crop/<n>.jpg        unaligned crops, test identities

The files themselves are written by the data layer's writers
(:func:`oaml_mm.datasets.recordio.write_insightface_rec`,
:func:`oaml_mm.datasets.verification_bin.write_verification_bin`,
:func:`oaml_mm.datasets.occlusion_mask_dataset.write_occlusion_mask_sample`), so the
demo exercises exactly the readers users' data goes through.
"""
import hashlib
import json
import os
import os.path as osp
import shutil
import time
from dataclasses import asdict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from oaml_mm.errors import ConfigError
from .generator import (MASKED_PROBE_TYPES, S_HELDOUT_PAIRS, S_PAIRS, IJBImage,
                        SynthFaceConfig, ValImage, render_calib,
                        render_heldout, render_ijbc, render_occluded,
                        render_train, render_val, run_jobs)
from .heldout import HELDOUT_OCCLUSION_TYPES
from .identity import FaceIdentity, stream_rng

__all__ = ['SYNTHFACE_VERSION', 'MANIFEST', 'generate_synthface', 'read_manifest',
           'manifest_matches', 'build_pairs', 'code_hash']

#: Bumped whenever the same arguments would produce different files.
SYNTHFACE_VERSION = '1.0'
MANIFEST = 'synthface.json'
#: Written first by :func:`generate_synthface`, removed after the manifest:
#: a folder holding it was started by the generator and may be rebuilt.
PARTIAL_MARKER = '.synthface-partial'
_SUBDIRS = ('train', 'occluded', 'val', 'ijbc')
_IJBC_CSV_HEADER = ('TEMPLATE_ID,SUBJECT_ID,FILENAME,SIGHTING_ID,FACE_X,FACE_Y,'
                    'FACE_WIDTH,FACE_HEIGHT')


def code_hash() -> str:
    """SHA-256 (first 16 hex digits) of the generator's source files.

    Stored in the manifest so that a changed renderer regenerates the data set even
    when nobody remembered to bump :data:`SYNTHFACE_VERSION`.
    """
    digest = hashlib.sha256()
    here = osp.dirname(osp.abspath(__file__))
    for name in ('identity.py', 'canvas.py', 'render.py', 'occluders.py',
                 'heldout.py', 'generator.py', 'writer.py'):
        with open(osp.join(here, name), 'rb') as f:
            digest.update(f.read().replace(b'\r\n', b'\n'))
    return digest.hexdigest()[:16]


def read_manifest(out_dir: str) -> Optional[dict]:
    """The manifest of a generated data set, or ``None`` if there is none."""
    path = osp.join(out_dir, MANIFEST)
    if not osp.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def manifest_matches(out_dir: str, cfg: SynthFaceConfig) -> bool:
    """Whether ``out_dir`` already holds SynthFace for exactly ``cfg``."""
    man = read_manifest(out_dir)
    if not man or man.get('version') != SYNTHFACE_VERSION or man.get(
            'config') != asdict(cfg) or man.get('code_hash') != code_hash():
        return False
    return all(osp.exists(osp.join(out_dir, p)) for p in man.get('files', []))


def build_pairs(labels: np.ndarray, slot0_ok: np.ndarray, slot1_ok: np.ndarray,
                num_pairs: int, rng: np.random.Generator,
                folds: int = 10) -> Tuple[np.ndarray, np.ndarray]:
    """Draw distinct verification pairs, LFW-style: per fold, genuine then impostor.

    Args:
        labels (numpy.ndarray): [M] identity of each candidate image.
        slot0_ok (numpy.ndarray): [M] bool, images allowed as the first image.
        slot1_ok (numpy.ndarray): [M] bool, images allowed as the second image.
        num_pairs (int): Pairs wanted, a multiple of ``2 * folds``.
        rng (numpy.random.Generator): Source of randomness.
        folds (int): Blocks of ``num_pairs / folds`` pairs. Defaults to 10.

    Returns:
        tuple: ``(pairs int64 [N,2] image indices, issame bool [N])``.

    Raises:
        ConfigError: ``num_pairs`` is not a positive multiple of ``2 * folds``,
            or too few images to draw that many distinct pairs.
    """
    per = num_pairs // (2 * folds)
    if per == 0 or num_pairs % (2 * folds):
        raise ConfigError(
            f'SynthFace: {num_pairs} pairs cannot be split into {folds} folds of '
            f'half genuine, half impostor pairs; give a positive multiple of '
            f'{2 * folds}')
    idx0 = np.nonzero(slot0_ok)[0]
    idx1 = np.nonzero(slot1_ok)[0]
    by_label: Dict[int, np.ndarray] = {
        int(lab): idx1[labels[idx1] == lab] for lab in np.unique(labels[idx1])
    }
    seen = set()

    def draw(same: bool) -> Tuple[int, int]:
        for _ in range(1000):
            a = int(idx0[rng.integers(len(idx0))])
            if same:
                cand = by_label.get(int(labels[a]), np.zeros(0, np.int64))
                cand = cand[cand != a]
            else:
                cand = idx1[labels[idx1] != labels[a]]
            if len(cand) == 0:
                continue
            b = int(cand[rng.integers(len(cand))])
            key = (a, b)
            if key not in seen:
                seen.add(key)
                return key
        raise ConfigError(
            f'SynthFace: too few images to draw {num_pairs} distinct pairs '
            f'({len(idx0)} images of {len(by_label)} identities); lower '
            '--val-pairs (val_pairs) or raise --val-images-per-id '
            '(val_images_per_id) or --test-identities (test_identities)')

    pairs, issame = [], []
    for _ in range(folds):
        for same in (True, False):
            for _ in range(per):
                pairs.append(draw(same))
                issame.append(same)
    return np.asarray(pairs, np.int64), np.asarray(issame, bool)


def _flatten(ids: Sequence[FaceIdentity],
             results: List[List[ValImage]]) -> Tuple[List[ValImage], np.ndarray]:
    flat = [im for per_id in results for im in per_id]
    labels = np.asarray([ident.index for ident, per_id in zip(ids, results)
                         for _ in per_id], np.int64)
    return flat, labels


def _write_pair_set(out: str, name: str, flat: List[ValImage], labels: np.ndarray,
                    pairs: np.ndarray, issame: np.ndarray,
                    versions: Sequence[Tuple[str, str]]) -> List[str]:
    """One verification ``.bin`` and its side files; ``versions[i]`` says which
    version (``'clean'`` or ``'occluded'``) of each image pair ``i`` shows."""
    from oaml_mm.datasets.verification_bin import write_verification_bin
    jpegs, vis, types, labs = [], [], [], []
    for (a, b), (v0, v1) in zip(pairs, versions):
        for idx, version in ((a, v0), (b, v1)):
            im = flat[idx]
            occluded = version == 'occluded'
            jpegs.append(im.occluded if occluded else im.clean)
            # A clean face's map on the grid the generator wrote the others on.
            vis.append(im.visibility if occluded else
                       np.ones(np.shape(im.visibility), np.float32))
            types.append(im.occlusion if occluded else 'none')
            labs.append(labels[idx])
    write_verification_bin(osp.join(out, f'{name}.bin'), jpegs, issame)
    np.save(osp.join(out, f'{name}.vis.npy'), np.stack(vis).astype(np.float16))
    np.save(osp.join(out, f'{name}.labels.npy'), np.asarray(labs, np.int64))
    with open(osp.join(out, f'{name}.types.txt'), 'w') as f:
        f.write('\n'.join(types) + '\n')
    return [f'val/{name}.bin', f'val/{name}.vis.npy', f'val/{name}.labels.npy',
            f'val/{name}.types.txt']


def _write_val(out: str, cfg: SynthFaceConfig, test_ids: Sequence[FaceIdentity],
               results: List[List[ValImage]], prefix: str = '',
               pair_stream: int = S_PAIRS,
               probe_types: Sequence[str] = MASKED_PROBE_TYPES) -> List[str]:
    """``clean``, ``masked`` and ``occluded`` sets of ``cfg.val_pairs`` pairs.

    ``masked`` pairs a clean image with an occluded image of ``probe_types``; the
    held-out sets are the same three with ``prefix='heldout_'``, their own pair
    stream and every held-out type as a probe.
    """
    sets = _val_pairs(cfg, test_ids, results, pair_stream, probe_types)
    os.makedirs(out, exist_ok=True)
    flat, labels = _flatten(test_ids, results)
    files = []
    for name, v0, v1, pairs, issame in sets:
        files += _write_pair_set(out, prefix + name, flat, labels, pairs, issame,
                                 [(v0, v1)] * len(pairs))
    return files


def _val_pairs(cfg: SynthFaceConfig, ids: Sequence[FaceIdentity],
               results: List[List[ValImage]], pair_stream: int = S_PAIRS,
               probe_types: Sequence[str] = MASKED_PROBE_TYPES) -> list:
    """The pairs of :func:`_write_val`'s three sets, drawn without writing:
    ``(name, slot-0 version, slot-1 version, pairs, issame)`` each.

    Raises:
        ConfigError: Too few images for ``cfg.val_pairs`` distinct pairs.
    """
    flat, labels = _flatten(ids, results)
    masked_ok = np.asarray([im.occlusion in probe_types for im in flat])
    everything = np.ones(len(flat), bool)
    # (name, slot-0 version, slot-1 version, slot-1 allowed images)
    specs = [('clean', 'clean', 'clean', everything),
             ('masked', 'clean', 'occluded', masked_ok),
             ('occluded', 'occluded', 'occluded', everything)]
    out = []
    for k, (name, v0, v1, ok1) in enumerate(specs):
        pairs, issame = build_pairs(labels, everything, ok1, cfg.val_pairs,
                                    stream_rng(cfg.seed, pair_stream, k))
        out.append((name, v0, v1, pairs, issame))
    return out


#: Pair kinds of ``calib.bin``, dealt in turn: clean-clean, clean vs occluded,
#: occluded-occluded.
CALIB_PAIR_KINDS = (('clean', 'clean'), ('clean', 'occluded'),
                    ('occluded', 'occluded'))


def _write_calib(out: str, cfg: SynthFaceConfig, ids: Sequence[FaceIdentity],
                 results: List[List[ValImage]]) -> List[str]:
    """``calib.bin``: ``cfg.val_pairs`` pairs, pair ``i`` of kind
    ``CALIB_PAIR_KINDS[i % 3]``."""
    os.makedirs(out, exist_ok=True)
    flat, labels = _flatten(ids, results)
    pairs, issame = _calib_pairs(cfg, ids, results)
    versions = [CALIB_PAIR_KINDS[i % 3] for i in range(len(pairs))]
    return _write_pair_set(out, 'calib', flat, labels, pairs, issame, versions)


def _calib_pairs(cfg: SynthFaceConfig, ids: Sequence[FaceIdentity],
                 results: List[List[ValImage]]) -> Tuple[np.ndarray, np.ndarray]:
    """The pairs of ``calib.bin``, drawn without writing."""
    flat, labels = _flatten(ids, results)
    everything = np.ones(len(flat), bool)
    return build_pairs(labels, everything, everything, cfg.val_pairs,
                       stream_rng(cfg.seed, S_HELDOUT_PAIRS, 3))


def _type_counts(results: List[List[ValImage]]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for per_id in results:
        for im in per_id:
            counts[im.occlusion] = counts.get(im.occlusion, 0) + 1
    return dict(sorted(counts.items()))


def _write_ijbc(out: str, subjects: Sequence[FaceIdentity],
                results: List[List[IJBImage]]) -> List[str]:
    """Mini IJB-C in the release layout; G1 = even subjects' galleries, G2 = odd."""
    meta = osp.join(out, 'meta')
    crops = osp.join(out, 'loose_crop')
    os.makedirs(meta, exist_ok=True)
    os.makedirs(crops, exist_ok=True)
    tid_mid, pts, g1, g2, probe = [], [], [], [], []
    gallery_tids, probe_tids = [], []
    n = 0
    next_tid, next_mid = 1, 1
    for s, (ident, images) in enumerate(zip(subjects, results)):
        tids: Dict[int, int] = {}
        mids: Dict[int, int] = {}
        for im in images:
            if im.template not in tids:
                tids[im.template] = next_tid
                (gallery_tids if im.template == 0 else probe_tids).append(
                    (next_tid, ident.index))
                next_tid += 1
            if im.media not in mids:
                mids[im.media] = next_mid
                next_mid += 1
            n += 1
            name = f'{n}.jpg'
            with open(osp.join(crops, name), 'wb') as f:
                f.write(im.jpeg)
            tid, mid = tids[im.template], mids[im.media]
            tid_mid.append(f'{name} {tid} {mid}')
            coords = ' '.join(f'{v:.3f}' for v in im.landmarks.reshape(-1))
            pts.append(f'{name} {coords} {im.faceness:.4f}')
            box = ','.join(str(v) for v in im.box)
            row = f'{tid},{ident.index},{name},{mid},{box}'
            if im.template == 0:
                (g1 if s % 2 == 0 else g2).append(row)
            else:
                probe.append(row)
    pairs = [f'{tg} {tp} {int(sg == sp)}' for tg, sg in gallery_tids
             for tp, sp in probe_tids]
    files = {
        'ijbc_face_tid_mid.txt': tid_mid,
        'ijbc_name_5pts_score.txt': pts,
        'ijbc_template_pair_label.txt': pairs,
        'ijbc_1N_gallery_G1.csv': [_IJBC_CSV_HEADER] + g1,
        'ijbc_1N_gallery_G2.csv': [_IJBC_CSV_HEADER] + g2,
        'ijbc_1N_probe_mixed.csv': [_IJBC_CSV_HEADER] + probe,
    }
    for fname, lines in files.items():
        with open(osp.join(meta, fname), 'w', newline='\n') as f:
            f.write('\n'.join(lines) + '\n')
    return [f'ijbc/meta/{f}' for f in files] + ['ijbc/loose_crop']


def generate_synthface(out_dir: str,
                       cfg: SynthFaceConfig = SynthFaceConfig(),
                       workers: int = 2,
                       force: bool = False,
                       log: Optional[Callable[[str], None]] = print) -> dict:
    """Generate SynthFace into ``out_dir`` unless it is already there.

    When ``out_dir/synthface.json`` matches ``cfg`` and the version, nothing is done
    (the demo calls this as "generate if missing"). Otherwise the SynthFace
    sub-folders are rebuilt and the manifest is written last, so an interrupted run is
    never mistaken for a complete one.

    Args:
        out_dir (str): Output folder.
        cfg (SynthFaceConfig): What to generate.
        workers (int): Processes. Defaults to 2. The files do not depend on it.
        force (bool): Regenerate even if the manifest matches.
        log (callable, optional): Progress messages; ``None`` for silence.

    Returns:
        dict: The manifest.

    Raises:
        ConfigError: ``out_dir`` holds SynthFace folders but no manifest (not ours
            to overwrite), or the config is impossible.

    Examples:
        >>> man = generate_synthface('data/synthface')  # doctest: +SKIP
        >>> man['counts']['train_images']  # doctest: +SKIP
        6400
    """
    from oaml_mm.datasets.occlusion_mask_dataset import \
        write_occlusion_mask_sample
    from oaml_mm.datasets.recordio import write_insightface_rec
    say = log or (lambda msg: None)
    if not force and manifest_matches(out_dir, cfg):
        say(f'SynthFace already in {out_dir} (manifest matches); nothing to do')
        return read_manifest(out_dir)
    existing = [d for d in _SUBDIRS if osp.exists(osp.join(out_dir, d))]
    marker = osp.join(out_dir, PARTIAL_MARKER)
    if existing and read_manifest(out_dir) is None and not osp.isfile(marker):
        raise ConfigError(
            f'{out_dir} holds {existing} but no {MANIFEST}: not a SynthFace folder '
            'this tool wrote; choose another --out or remove them')
    os.makedirs(out_dir, exist_ok=True)
    # Written before anything else: a run that stops half-way leaves a folder
    # the next run knows to be its own and rebuilds.
    with open(marker, 'w') as f:
        f.write('SynthFace generation started; incomplete until '
                f'{MANIFEST} exists\n')
    if osp.exists(osp.join(out_dir, MANIFEST)):
        os.remove(osp.join(out_dir, MANIFEST))
    for d in existing:
        shutil.rmtree(osp.join(out_dir, d))

    t0 = time.time()
    splits = cfg.identity_splits()
    train_ids, test_ids = splits['train'], splits['test']
    heldout_ids, calib_ids = splits['heldout'], splits['calib']
    ijbc_ids = test_ids[:min(cfg.ijbc_subjects, len(test_ids))]
    jobs = ([(render_train, x) for x in train_ids] +
            [(render_occluded, x) for x in train_ids] +
            [(render_val, x) for x in test_ids] +
            [(render_ijbc, x) for x in ijbc_ids] +
            [(render_heldout, x) for x in heldout_ids] +
            [(render_calib, x) for x in calib_ids])
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.time()
        if now - last[0] > 5 or done == total:
            last[0] = now
            say(f'SynthFace: rendered {done}/{total} identity jobs '
                f'({now - t0:.0f} s)')

    results = run_jobs(cfg, jobs, workers, progress)
    n_tr = len(train_ids)
    train_res = results[:n_tr]
    occ_res = results[n_tr:2 * n_tr]
    val_res = results[2 * n_tr:2 * n_tr + len(test_ids)]
    start = 2 * n_tr + len(test_ids)
    ijbc_res = results[start:start + len(ijbc_ids)]
    start += len(ijbc_ids)
    heldout_res = results[start:start + len(heldout_ids)]
    calib_res = results[start + len(heldout_ids):]

    # Every pair set is drawn before the first file is written, so an
    # impossible --val-pairs leaves nothing half-written.
    _val_pairs(cfg, test_ids, val_res)
    if heldout_ids:
        _val_pairs(cfg, heldout_ids, heldout_res, S_HELDOUT_PAIRS,
                   HELDOUT_OCCLUSION_TYPES)
    if calib_ids:
        _calib_pairs(cfg, calib_ids, calib_res)

    say('SynthFace: writing files')
    samples = [(jpeg, label) for label, jpegs in enumerate(train_res)
               for jpeg in jpegs]
    write_insightface_rec(osp.join(out_dir, 'train'), samples, len(train_ids))
    files = ['train/train.rec', 'train/train.idx', 'train/property']

    occ_root = osp.join(out_dir, 'occluded')
    lines = []
    type_counts: Dict[str, int] = {}
    for label, per_id in enumerate(occ_res):
        for j, (occ, img, vis) in enumerate(per_id):
            name = f'{label:05d}/{j:02d}_{occ}'
            write_occlusion_mask_sample(occ_root, name, img, vis * 255, ext='.jpg')
            lines.append(f'{name} {label}')
            type_counts[occ] = type_counts.get(occ, 0) + 1
    with open(osp.join(occ_root, 'labels.txt'), 'w', newline='\n') as f:
        f.write('\n'.join(lines) + '\n')
    files += ['occluded/labels.txt', 'occluded/images', 'occluded/masks']

    files += _write_val(osp.join(out_dir, 'val'), cfg, test_ids, val_res)
    files += _write_ijbc(osp.join(out_dir, 'ijbc'), ijbc_ids, ijbc_res)
    extra_counts: Dict[str, object] = {}
    if heldout_ids:
        files += _write_val(osp.join(out_dir, 'val'), cfg, heldout_ids, heldout_res,
                            prefix='heldout_', pair_stream=S_HELDOUT_PAIRS,
                            probe_types=HELDOUT_OCCLUSION_TYPES)
        extra_counts.update(
            heldout_identities=len(heldout_ids),
            heldout_identity_range=[heldout_ids[0].index, heldout_ids[-1].index],
            heldout_images=sum(len(r) for r in heldout_res),
            heldout_types=_type_counts(heldout_res))
    if calib_ids:
        files += _write_calib(osp.join(out_dir, 'val'), cfg, calib_ids, calib_res)
        extra_counts.update(
            calib_identities=len(calib_ids),
            calib_identity_range=[calib_ids[0].index, calib_ids[-1].index],
            calib_images=sum(len(r) for r in calib_res),
            calib_types=_type_counts(calib_res))

    manifest = dict(
        version=SYNTHFACE_VERSION,
        code_hash=code_hash(),
        config=asdict(cfg),
        counts=dict(
            train_identities=len(train_ids),
            train_images=len(samples),
            occluded_images=len(lines),
            occluded_types=dict(sorted(type_counts.items())),
            test_identities=len(test_ids),
            val_pairs_per_bin=cfg.val_pairs,
            ijbc_subjects=len(ijbc_ids),
            ijbc_images=sum(len(r) for r in ijbc_res),
            train_label_range=[0, len(train_ids) - 1],
            test_identity_range=[test_ids[0].index, test_ids[-1].index],
            **extra_counts),
        files=files)
    tmp = osp.join(out_dir, MANIFEST + '.tmp')
    with open(tmp, 'w') as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    os.replace(tmp, osp.join(out_dir, MANIFEST))
    os.remove(marker)
    say(f'SynthFace: done in {time.time() - t0:.1f} s -> {out_dir}')
    return manifest
