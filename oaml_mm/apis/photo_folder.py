"""Turn a folder of raw photos into an aligned face data set.

The engine of ``tools/dataset_converters/align_faces.py``; :func:`align_folder` is
its Python API.

Every photo goes through :class:`~oaml_mm.apis.FaceFinder` (MTCNN detection, the
landmark plausibility check, alignment to the ArcFace 112x112 template; eye-only
alignment when the nose or mouth points are implausible) and is written as

* ``--format folder`` (default): ``OUT_DIR/<identity>/<name>.jpg``, a
  ``FaceImageFolder`` (flat input: ``OUT_DIR/<name>.jpg``);
* ``--format rec``: ``OUT_DIR/train.rec``, ``train.idx``, ``property`` in the
  insightface layout (identity sub-folders needed; labels = sorted folder order);
* with ``--masks MASK_DIR`` (an occluded set: ``MASK_DIR/<same relative
  path>.png``, 8- or 16-bit, 0..255, 0..65535 or 0/1 with 255 / 65535 / 1 =
  visible): ``OUT_DIR/images/...`` and ``OUT_DIR/masks/...`` (0..255) plus
  ``labels.txt``, an ``OcclusionMaskDataset``, the masks warped with the image.

Resumable: each output is written atomically and recorded in
``OUT_DIR/.align_journal.jsonl`` (a file, so a ``FaceImageFolder`` scan of OUT_DIR
does not take it for an identity) with the options it was made with. A rerun (after
a crash, or to fix failures) keeps the photos aligned before, retries every photo
that failed (fixed files, new ``--boxes`` / ``--landmarks`` lines), redoes an
aligned photo whose file or ``--landmarks`` / ``--boxes`` line changed or whose
output file is gone (the disk, not the journal, decides), and says how many it
retried. A rerun whose options would change the aligned faces
(``--align``, ``--size``, ``--format``, ``--faces``, ``--detect``,
``--min-score``, ``--quality``, ``--masks``, IN_DIR) is refused: use the recorded
options or a new OUT_DIR. OUT_DIR and IN_DIR may not contain each other. A bad
file (not an image, empty, huge, no face) never stops the run: it is listed in
``OUT_DIR/align_report.json`` (with every face's alignment path and detector
score) and ``OUT_DIR/align_failures.txt``.
"""
import json
import multiprocessing as mp
import os
import os.path as osp
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np

from oaml_mm.errors import ConfigError, DataFormatError, OAMLError

__all__ = ['align_folder', 'run', 'format_summary', 'scan', 'process',
           'JOURNAL', 'OUTPUT_OPTIONS']

IMG_EXT = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')
JOURNAL = '.align_journal.jsonl'
STAGING = '.align_staging'  # --format rec: aligned JPEGs before packing


def scan(in_dir: str) -> Tuple[List[str], Optional[List[str]]]:
    """Relative photo paths (sorted) and the identity folders (None when flat)."""
    if not osp.isdir(in_dir):
        raise DataFormatError(in_dir, 'not a folder of photos')
    subdirs = sorted(d for d in os.listdir(in_dir)
                     if osp.isdir(osp.join(in_dir, d)) and not d.startswith('.'))
    files = []
    if subdirs:
        for d in subdirs:
            for root, dirs, names in os.walk(osp.join(in_dir, d)):
                dirs.sort()
                files += [osp.relpath(osp.join(root, n), in_dir)
                          for n in sorted(names)
                          if osp.splitext(n)[1].lower() in IMG_EXT]
    else:
        files = sorted(n for n in os.listdir(in_dir)
                       if osp.splitext(n)[1].lower() in IMG_EXT)
    if not files:
        raise DataFormatError(in_dir, f'no photos ({", ".join(IMG_EXT)}) found')
    return files, subdirs or None


def _read_table(path: Optional[str], width: int, what: str) -> Dict[str, list]:
    if not path:
        return {}
    out = {}
    with open(path, encoding='utf-8-sig') as f:  # a BOM is not a name
        for i, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                vals = [float(v) for v in parts[1:]]
            except ValueError:
                vals = []
            if len(vals) != width:
                raise DataFormatError(path, f'expected "<relative path>" and '
                                      f'{width} numbers ({what})', record=i)
            out[osp.normpath(parts[0])] = vals
    return out


# ---------------------------------------------------------------- workers
_W: dict = {}


def _init_worker(opts: dict) -> None:
    import torch

    from oaml_mm.apis.face_finder import FaceFinder
    torch.set_num_threads(1)
    _W.update(opts)
    _W['finder'] = FaceFinder(select=opts['faces'], align=opts['align'],
                              detect=opts['detect'], size=opts['size'],
                              min_score=opts['min_score'])


def _write_atomic(path: str, data: bytes) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'wb') as f:
        f.write(data)
    os.replace(tmp, path)


def _encode(img: np.ndarray, ext: str, quality: int) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == '.jpg' else []
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise OSError(f'cannot encode {ext}')
    return buf.tobytes()


def process(rel: str) -> dict:
    """Align one photo and write its face(s); never raises."""
    from oaml_mm.apis.face_finder import read_photo
    from oaml_mm.datasets.occlusion_mask_dataset import mask_to_visibility
    from oaml_mm.datasets.transforms import AlignFace5Points
    o = _W
    src = osp.join(o['in_dir'], rel)
    stem = osp.splitext(rel)[0]
    rec = dict(src=rel, status='failed', faces=[])
    try:
        img = read_photo(src)
        mask = None
        if o['masks']:
            mpath = osp.join(o['masks'], stem + '.png')
            # Full depth and every accepted encoding (0..255, 0..65535, 0/1):
            # plain GRAYSCALE shifts a 16-bit 0/1 mask to all zeros.
            mask = cv2.imread(mpath, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
            if mask is None:
                raise DataFormatError(mpath, 'missing or unreadable mask')
            mask = mask_to_visibility(mask, mpath)
            if mask.shape != img.shape[:2]:
                raise DataFormatError(mpath, f'mask {mask.shape[::-1]} does not '
                                      f'match the photo {img.shape[1::-1]}')
        key = osp.normpath(rel)
        faces = o['finder'].find(img, src, o['landmarks'].get(key),
                                 o['boxes'].get(key))
        align = AlignFace5Points((o['size'], o['size']))
        for k, face in enumerate(faces):
            name = stem if len(faces) == 1 and o['faces'] == 'largest' else \
                f'{stem}_{k}'
            crop = face.pop('crop')
            if mask is not None:
                vis = mask
                if face['align_points'] is not None:  # else an aligned crop
                    vis = align.transform(dict(
                        img=img, visibility_mask=mask,
                        landmarks=np.asarray(face['align_points'], np.float32))
                    )['visibility_mask']
                m8 = np.clip(np.rint(vis * 255), 0, 255).astype(np.uint8)
                out_img = osp.join(o['out_dir'], 'images', name + '.png')
                _write_atomic(osp.join(o['out_dir'], 'masks', name + '.png'),
                              _encode(m8, '.png', 0))
                _write_atomic(out_img, _encode(crop[:, :, ::-1], '.png', 0))
            else:
                out_img = osp.join(o['aligned_dir'], name + '.jpg')
                _write_atomic(out_img, _encode(crop[:, :, ::-1], '.jpg',
                                               o['quality']))
            face.pop('align_points', None)
            face.pop('image', None)
            face['out'] = osp.relpath(out_img, o['out_dir'])
            rec['faces'].append(face)
        rec['status'] = 'ok'
    except OAMLError as e:
        rec['reason'] = str(e)
    except Exception as e:  # a batch tool never stops on one bad file
        rec['reason'] = f'{src}: {type(e).__name__}: {e}'
    return rec


# ------------------------------------------------------------------- main
def _journal(path: str) -> Tuple[Dict[str, dict], Optional[dict]]:
    """The journal's latest record per photo, and the options it was made with
    (None for a new journal or one written before options were recorded)."""
    done, options = {}, None
    if osp.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    if 'options' in rec:
                        options = rec['options']
                    else:
                        done[rec['src']] = rec
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by the crash: that photo is redone
    return done, options


#: Options that change what a successful photo's output is: a rerun may not
#: change them, or OUT_DIR would mix outputs of two settings. --landmarks and
#: --boxes are compared per photo instead (a changed line redoes that photo).
OUTPUT_OPTIONS = ('in_dir', 'format', 'masks', 'faces', 'align', 'detect',
                  'size', 'min_score', 'quality')


def _options(args: Any) -> dict:
    real = {k: getattr(args, k) for k in OUTPUT_OPTIONS}
    for k in ('in_dir', 'masks'):
        if real[k]:
            real[k] = osp.realpath(real[k])
    return json.loads(json.dumps(real))  # as the journal gives them back


def _check_options(recorded: dict, current: dict, out_dir: str) -> None:
    diff = [k for k in OUTPUT_OPTIONS if recorded.get(k) != current[k]]
    if diff:
        flag = {k: '--' + k.replace('_', '-') for k in OUTPUT_OPTIONS}
        flag.update(in_dir='IN_DIR')
        said = ', '.join(f'{flag[k]} {recorded.get(k)!r} -> {current[k]!r}'
                         for k in diff)
        raise ConfigError(
            f'{out_dir} was aligned with other options ({said}): its '
            'aligned faces would mix both settings. Rerun with the recorded '
            'options (only failures and photos whose file, --landmarks or '
            '--boxes line changed are redone), or give a new OUT_DIR to '
            'redo everything')


def _inside(a: str, b: str) -> bool:
    a, b = osp.realpath(a), osp.realpath(b)
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


def _inputs(args_in: str, rel: str, opts: dict) -> dict:
    """What one photo's output depends on besides the options: its file (and
    mask file), its --landmarks / --boxes lines."""

    def stamp(path):
        if not osp.isfile(path):
            return None
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]

    key = osp.normpath(rel)
    mask = stamp(osp.join(opts['masks'], osp.splitext(rel)[0] + '.png')) \
        if opts['masks'] else None
    return dict(file=stamp(osp.join(args_in, rel)), mask=mask,
                landmarks=opts['landmarks'].get(key), box=opts['boxes'].get(key))


def _output_files(rec: dict) -> List[str]:
    """The files (relative to OUT_DIR) a photo's journal record says it made."""
    files = []
    for face in rec.get('faces', []):
        out = face.get('out')
        if out:
            files.append(out)
            if out.startswith('images' + os.sep):
                files.append('masks' + out[len('images'):])
    return files


def _outputs_present(out_dir: str, rec: dict) -> bool:
    return all(osp.isfile(osp.join(out_dir, out)) for out in _output_files(rec))


def _remove_outputs(out_dir: str, rec: dict) -> None:
    """Delete a photo's earlier outputs before it is redone (the new run may
    find fewer faces, or none)."""
    for out in _output_files(rec):
        if osp.isfile(osp.join(out_dir, out)):
            os.remove(osp.join(out_dir, out))


def run(args: Any) -> dict:
    """Align the photos of ``args.in_dir``; returns the report it writes.

    Args:
        args: An object with the attributes of :func:`align_folder`'s arguments
            (``in_dir``, ``out_dir``, ``format``, ``masks``, ``faces``, ``align``,
            ``detect``, ``landmarks``, ``boxes``, ``min_score``, ``size``,
            ``quality``, ``workers``, ``no_progress``), e.g. the parsed options of
            ``tools/dataset_converters/align_faces.py``.

    Returns:
        dict: The report (also written to ``OUT_DIR/align_report.json``).

    Raises:
        ConfigError: Options that cannot work together, options that differ from
            the journal's, or IN_DIR and OUT_DIR inside each other.
        DataFormatError: IN_DIR holds no photos, or a ``--landmarks`` /
            ``--boxes`` line is malformed (file and line named).
    """
    files, identities = scan(args.in_dir)
    if args.format == 'rec' and identities is None:
        raise ConfigError(f'{args.in_dir}: --format rec needs one sub-folder '
                          'per identity (a flat folder has no labels)')
    if args.format == 'rec' and args.masks:
        raise ConfigError('--masks writes an OcclusionMaskDataset folder; '
                          'drop --format rec')
    if args.masks and not osp.isdir(args.masks):
        raise DataFormatError(args.masks, 'not a folder of masks')
    out_dir = args.out_dir
    for a, b, what in ((out_dir, args.in_dir, 'OUT_DIR is inside IN_DIR'),
                       (args.in_dir, out_dir, 'IN_DIR is inside OUT_DIR')):
        if _inside(a, b):
            # A rerun would scan the aligned faces as photos (an identity
            # named after OUT_DIR).
            raise ConfigError(f'{what} ({out_dir} vs {args.in_dir}): the '
                              'aligned faces would be read as photos; give '
                              'two separate folders')
    journal_path = osp.join(out_dir, JOURNAL)
    done, recorded = _journal(journal_path)
    options = _options(args)
    if recorded is not None:
        _check_options(recorded, options, out_dir)
    os.makedirs(out_dir, exist_ok=True)
    aligned_dir = osp.join(out_dir, STAGING) if args.format == 'rec' \
        else out_dir
    opts = dict(in_dir=args.in_dir, out_dir=out_dir, aligned_dir=aligned_dir,
                masks=args.masks, faces=args.faces, align=args.align,
                detect=args.detect, size=args.size, min_score=args.min_score,
                quality=args.quality,
                landmarks=_read_table(args.landmarks, 10, 'landmarks'),
                boxes=_read_table(args.boxes, 4, 'box'))
    inputs = {f: _inputs(args.in_dir, f, opts) for f in files}
    # Failures are always retried: the user may have fixed the photo or added
    # a --boxes line; successes are kept unless their inputs changed.
    retried = [f for f in files if f in done and done[f]['status'] != 'ok']
    changed = [f for f in files if f in done and done[f]['status'] == 'ok'
               and 'inputs' in done[f] and done[f]['inputs'] != inputs[f]]
    # The disk, not the journal, says what is aligned: a deleted output
    # (or its mask) is redone and not counted until it is there again.
    missing = [f for f in files if f in done and done[f]['status'] == 'ok'
               and f not in changed and not _outputs_present(out_dir, done[f])]
    for f in changed + missing:
        _remove_outputs(out_dir, done[f])
    redo = set(retried) | set(changed) | set(missing)
    todo = [f for f in files if f not in done or f in redo]
    t0 = time.time()
    bar = None
    if not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(total=len(files), initial=len(files) - len(todo),
                   unit='photo', desc='align')
    with open(journal_path, 'a+') as journal:
        if journal.tell() > 0:
            journal.seek(journal.tell() - 1)
            if journal.read(1) != '\n':  # a crash cut the last line
                journal.write('\n')
        if recorded is None:
            journal.write(json.dumps(dict(options=options)) + '\n')
            journal.flush()

        def record(rec: dict) -> None:
            rec['inputs'] = inputs[rec['src']]
            journal.write(json.dumps(rec) + '\n')
            journal.flush()
            done[rec['src']] = rec
            if bar is not None:
                bar.update(1)
        if args.workers <= 0:
            _init_worker(opts)
            for rel in todo:
                record(process(rel))
        elif todo:
            ctx = mp.get_context('spawn')
            with ctx.Pool(args.workers, _init_worker, (opts,)) as pool:
                for rec in pool.imap_unordered(process, todo, chunksize=4):
                    record(rec)
    if bar is not None:
        bar.close()
    rerun = dict(
        retried=len(retried),
        retried_ok=sum(done[f]['status'] == 'ok' for f in retried),
        changed=len(changed), missing=len(missing))
    return _finish(args, files, identities, done, time.time() - t0, rerun)


def _finish(args, files, identities, done, seconds, rerun) -> dict:
    out_dir = args.out_dir
    recs = [done[f] for f in files]
    ok = [r for r in recs if r['status'] == 'ok']
    failed = [r for r in recs if r['status'] != 'ok']
    paths = Counter(face['path'] for r in ok for face in r['faces'])
    scores = [face['score'] for r in ok for face in r['faces']
              if face['score'] is not None]
    label_of = {d: i for i, d in enumerate(identities or [])}

    def label(rel: str) -> int:
        return label_of[rel.split(os.sep)[0]] if identities else -1

    faces = [(face['out'], label(r['src'])) for r in ok for face in r['faces']]
    if args.masks and identities:
        with open(osp.join(out_dir, 'labels.txt'), 'w') as f:
            for out, lab in faces:
                name = osp.splitext(osp.relpath(out, 'images'))[0]
                f.write(f'{name} {lab}\n')
    if args.format == 'rec':
        from oaml_mm.datasets.recordio import write_insightface_rec

        def samples():
            for out, lab in faces:
                with open(osp.join(out_dir, out), 'rb') as f:
                    yield f.read(), lab
        write_insightface_rec(out_dir, samples(), len(identities),
                              (args.size, args.size))
    report = dict(
        in_dir=args.in_dir, out_dir=out_dir, format=args.format,
        masks=args.masks, photos=len(files), aligned=len(ok),
        failed=len(failed), faces=len(faces), paths=dict(paths),
        mean_score=float(np.mean(scores)) if scores else None,
        identities=len(identities) if identities else None,
        seconds=round(seconds, 1), rerun=rerun,
        failures=[dict(src=r['src'], reason=r.get('reason', '')) for r in failed],
        per_photo={r['src']: [dict(path=f['path'], score=f['score'],
                                   note=f.get('note', ''))
                              for f in r['faces']] for r in ok})
    with open(osp.join(out_dir, 'align_report.json'), 'w') as f:
        json.dump(report, f, indent=1)
    with open(osp.join(out_dir, 'align_failures.txt'), 'w') as f:
        for r in failed:
            f.write(f'{r["src"]}\t{r.get("reason", "")}\n')
    return report


def align_folder(in_dir: str,
                 out_dir: str,
                 fmt: str = 'folder',
                 masks: Optional[str] = None,
                 faces: str = 'largest',
                 align: str = 'auto',
                 detect: str = 'always',
                 landmarks: Optional[str] = None,
                 boxes: Optional[str] = None,
                 min_score: float = 0.0,
                 size: int = 112,
                 quality: int = 95,
                 workers: int = 2,
                 progress: bool = True) -> dict:
    """Detect, check and align every photo of ``in_dir`` into ``out_dir``.

    Resumable through ``OUT_DIR/.align_journal.jsonl`` (see the module text); a bad
    photo never stops the run and is listed in the report.

    Args:
        in_dir (str): Photos: one sub-folder per identity, or flat.
        out_dir (str): Output folder (created); not inside ``in_dir`` nor around it.
        fmt (str): ``'folder'`` (a ``FaceImageFolder``) or ``'rec'`` (insightface
            ``train.rec``/``train.idx``/``property``; identity folders needed).
        masks (str, optional): Folder of visibility masks mirroring ``in_dir``
            (``<relative path without extension>.png``); writes an
            ``OcclusionMaskDataset`` (``images/``, ``masks/``, ``labels.txt``).
        faces (str): ``'largest'`` or ``'all'`` faces per photo.
        align (str): ``'auto'``, ``'five'`` or ``'eyes'`` (:class:`FaceFinder`).
        detect (str): ``'always'`` or ``'auto'`` (112x112 photos taken as crops).
        landmarks (str, optional): Text file ``"<relative path> x1 y1 ... x5 y5"``
            per line, used instead of detection for those photos.
        boxes (str, optional): Text file ``"<relative path> x1 y1 x2 y2"`` per
            line, used when detection fails.
        min_score (float): Drop detections under this detector score (0..1).
        size (int): Side of the aligned crops in pixels.
        quality (int): JPEG quality (1..100).
        workers (int): Processes (0: in this process).
        progress (bool): Show a progress bar.

    Returns:
        dict: The report: ``photos``, ``aligned``, ``failed``, ``faces``, ``paths``
        (faces per alignment path), ``mean_score``, ``rerun``, ``failures``, ...

    Raises:
        ConfigError, DataFormatError: As :func:`run`.
    """
    return run(SimpleNamespace(
        in_dir=in_dir, out_dir=out_dir, format=fmt, masks=masks, faces=faces,
        align=align, detect=detect, landmarks=landmarks, boxes=boxes,
        min_score=min_score, size=size, quality=quality, workers=workers,
        no_progress=not progress))


def format_summary(report: dict) -> str:
    """The one or two lines ``align_faces.py`` prints for a report of :func:`run`."""
    paths = ', '.join(f'{k} {v}' for k, v in sorted(report['paths'].items()))
    rr = report['rerun']
    lines = []
    missing = rr.get('missing', 0)
    if rr['retried'] or rr['changed'] or missing:
        lines.append(
            f'retried {rr["retried"]} earlier failure(s): {rr["retried_ok"]} '
            f'now aligned, {rr["retried"] - rr["retried_ok"]} still failing; '
            f'redid {rr["changed"]} aligned photo(s) whose file or '
            '--landmarks/--boxes line changed and '
            f'{missing} whose output file was gone')
    lines.append(
        f'{report["aligned"]}/{report["photos"]} photos aligned '
        f'({report["faces"]} faces: {paths}); {report["failed"]} failed, listed '
        f'in {osp.join(report["out_dir"], "align_failures.txt")}')
    return '\n'.join(lines)
