"""IJB-B / IJB-C meta files and the image-level data set over ``loose_crop/``.

Layout (docs/datasets.md; the release used by insightface's ``IJB_11.py`` and AdaFace's
``validation_mixed``)::

    <data_root>/                      e.g. IJB_release/IJBC
      meta/ijbc_face_tid_mid.txt      "<image> <template_id> <media_id>" per image
      meta/ijbc_template_pair_label.txt   "<t1> <t2> <label>" per 1:1 pair
      meta/ijbc_name_5pts_score.txt   "<image> x1 y1 ... x5 y5 <faceness>" per image
      loose_crop/<image>              the images
      meta/ijbc_1N_gallery_G1.csv ... optional 1:N lists (read by read_1n_csv for
                                      IJBMetric)

``ijbb_*`` for IJB-B. Both per-image files list the images in the same order; the
parsers check that and report the first disagreeing line. Image names must stay
inside ``data_root``: a name that is absolute or climbs out with ``..`` is refused.
"""
import csv
import io
import os.path as osp
from typing import Dict, List, Tuple

import numpy as np

from oaml_mm.errors import DataFormatError, MissingFileError
from oaml_mm.registry import DATASETS
from .base_face_dataset import BaseFaceDataset, check_relative_path, read_text

__all__ = [
    'IJBDataset', 'ijb_meta_paths', 'read_ijb_tid_mid', 'read_ijb_template_pairs',
    'read_ijb_landmarks', 'read_1n_csv', 'check_1n_lists'
]

_PREFIX = {'IJBB': 'ijbb', 'IJBC': 'ijbc'}


def ijb_meta_paths(data_root: str, subset: str) -> Dict[str, str]:
    """Paths of the meta files of ``subset`` ('IJBB' or 'IJBC') under ``data_root``.

    Returns:
        dict: ``tid_mid``, ``pairs``, ``landmarks`` (files) and ``images`` (folder).
    """
    key = subset.upper().replace('-', '')
    if key not in _PREFIX:
        raise ValueError(f'subset must be IJBB or IJBC, got {subset!r}')
    p = _PREFIX[key]
    meta = osp.join(data_root, 'meta')
    return dict(
        tid_mid=osp.join(meta, f'{p}_face_tid_mid.txt'),
        pairs=osp.join(meta, f'{p}_template_pair_label.txt'),
        landmarks=osp.join(meta, f'{p}_name_5pts_score.txt'),
        images=osp.join(data_root, 'loose_crop'))


def _require(path: str, what: str) -> None:
    if not osp.isfile(path):
        raise MissingFileError(path, f'IJB meta file: {what}')


_INT64 = (-2**63, 2**63 - 1)


def _split_lines(path: str, ncols: int, what: str) -> List[List[str]]:
    rows = []
    text = read_text(path, what)
    # StringIO iterates with universal newlines, as a file opened in text mode.
    with io.StringIO(text, newline=None) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != ncols:
                raise DataFormatError(
                    path, f'{len(parts)} columns, expected {ncols} ({what})',
                    record=f'line {lineno}')
            rows.append((lineno, parts))
    return rows


def read_ijb_tid_mid(path: str) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """Parse ``*_face_tid_mid.txt``.

    Returns:
        tuple: ``(names, template_ids int64 [N], media_ids int64 [N])``.

    Raises:
        MissingFileError: The file is missing.
        DataFormatError: A line is not ``image template_id media_id``.
    """
    _require(path, '"image template_id media_id" per image')
    names, tids, mids = [], [], []
    for lineno, (name, tid, mid) in _split_lines(
            path, 3, 'image template_id media_id'):
        try:
            tid_i, mid_i = int(tid), int(mid)
            if not all(_INT64[0] <= v <= _INT64[1] for v in (tid_i, mid_i)):
                raise ValueError
        except ValueError:
            raise DataFormatError(
                path, f'template/media id {tid!r} {mid!r} is not a 64-bit '
                'integer', record=f'line {lineno}') from None
        tids.append(tid_i)
        mids.append(mid_i)
        names.append(check_relative_path(name, path, f'line {lineno}'))
    return names, np.asarray(tids, np.int64), np.asarray(mids, np.int64)


def read_ijb_template_pairs(
        path: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse ``*_template_pair_label.txt`` (15.7M lines for IJB-C, read in one pass).

    Returns:
        tuple: ``(t1, t2, label)`` int64 arrays of equal length.

    Raises:
        MissingFileError: The file is missing.
        DataFormatError: A line is not three integers, or a label is not 0/1.
    """
    _require(path, '"template1 template2 label" per pair')
    with open(path, 'rb') as f:
        raw = f.read()
    if raw.startswith(b'\xef\xbb\xbf'):  # a UTF-8 byte-order mark
        raw = raw[3:]
    try:
        values = np.array(raw.split(), dtype=np.int64)
        ok = values.size % 3 == 0
    except (ValueError, OverflowError):
        ok = False
    if ok:
        lines = raw.splitlines()
        # Three integers per non-empty line; a shifted column would still pass the
        # count test, so compare against the number of non-empty lines.
        ok = sum(1 for line in lines if line.strip()) * 3 == values.size
    if not ok:
        # Slow path only to name the first bad line.
        for lineno, parts in _split_lines(path, 3, 't1 t2 label'):
            try:
                if not all(_INT64[0] <= int(x) <= _INT64[1] for x in parts):
                    raise ValueError
            except ValueError:
                raise DataFormatError(
                    path, 'expected three 64-bit integers, got '
                    f'{" ".join(parts)!r}', record=f'line {lineno}') from None
        raise DataFormatError(path, 'expected "t1 t2 label" lines')
    values = values.reshape(-1, 3)
    bad = np.nonzero((values[:, 2] != 0) & (values[:, 2] != 1))[0]
    if bad.size:
        raise DataFormatError(
            path, f'label {values[bad[0], 2]} is not 0 or 1',
            record=f'line {int(bad[0]) + 1}', field='label')
    return values[:, 0].copy(), values[:, 1].copy(), values[:, 2].copy()


def read_ijb_landmarks(path: str) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """Parse ``*_name_5pts_score.txt``.

    Returns:
        tuple: ``(names, landmarks float32 [N,5,2], faceness float32 [N])``.

    Raises:
        MissingFileError: The file is missing.
        DataFormatError: A line is not an image name, ten coordinates and a score.
    """
    _require(path, '"image x1 y1 ... x5 y5 faceness" per image')
    names, lmks, scores = [], [], []
    for lineno, parts in _split_lines(path, 12, 'image x1 y1 ... x5 y5 faceness'):
        try:
            vals = [float(x) for x in parts[1:]]
        except ValueError:
            raise DataFormatError(
                path, 'expected ten landmark coordinates and a faceness score '
                f'as numbers, got {" ".join(parts[1:])!r}',
                record=f'line {lineno}') from None
        if not np.isfinite(np.asarray(vals, np.float32)).all():
            raise DataFormatError(
                path, 'landmark coordinates and faceness must be finite '
                f'float32 values, got {" ".join(parts[1:])!r}',
                record=f'line {lineno}')
        names.append(check_relative_path(parts[0], path, f'line {lineno}'))
        lmks.append(vals[:10])
        scores.append(vals[10])
    return (names, np.asarray(lmks, np.float32).reshape(-1, 5, 2),
            np.asarray(scores, np.float32))


def read_1n_csv(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Templates and subjects of an IJB 1:N gallery/probe CSV.

    The file has a header with ``TEMPLATE_ID`` and ``SUBJECT_ID`` columns (any case)
    and one row per image; a template must keep one subject.

    Returns:
        tuple: ``(template_ids, subject_ids)`` int64, one entry per template, in
        order of first appearance.

    Raises:
        MissingFileError: The file is missing.
        DataFormatError: Not UTF-8, no such header, a row without two 64-bit
            integer ids, a template listed with two subjects (names the line),
            or no rows at all after the header.
    """
    if not osp.isfile(path):
        raise MissingFileError(path, 'IJB 1:N template list')
    templates: Dict[int, int] = {}
    text = read_text(path, 'IJB 1:N CSV')
    try:
        reader = csv.reader(io.StringIO(text, newline=''))
        header = [h.strip().upper() for h in next(reader, [])]
        if 'TEMPLATE_ID' not in header or 'SUBJECT_ID' not in header:
            raise DataFormatError(path, 'header must name TEMPLATE_ID and '
                                  f'SUBJECT_ID columns, got {header[:8]}',
                                  record='line 1')
        ti, si = header.index('TEMPLATE_ID'), header.index('SUBJECT_ID')
        for row in reader:
            lineno = reader.line_num
            if not row:
                continue
            try:
                t, s = int(row[ti]), int(row[si])
                if not all(_INT64[0] <= v <= _INT64[1] for v in (t, s)):
                    raise ValueError
            except (ValueError, IndexError):
                raise DataFormatError(
                    path, f'expected 64-bit integer TEMPLATE_ID and SUBJECT_ID, '
                    f'got {row[:8]!r}', record=f'line {lineno}') from None
            if templates.setdefault(t, s) != s:
                raise DataFormatError(
                    path, f'template {t} has subjects {templates[t]} and {s}',
                    record=f'line {lineno}', field='SUBJECT_ID')
    except csv.Error as e:
        raise DataFormatError(path, f'not a CSV file: {e}',
                              record=f'line {reader.line_num}') from None
    if not templates:
        # Figures over no templates are NaN, not a result.
        raise DataFormatError(path, 'no template rows after the header; '
                              'expected one "TEMPLATE_ID,SUBJECT_ID,..." row per '
                              'image')
    return (np.fromiter(templates.keys(), np.int64, len(templates)),
            np.fromiter(templates.values(), np.int64, len(templates)))


def check_1n_lists(galleries: List[Tuple[str, np.ndarray]],
                   probe: Tuple[str, np.ndarray]) -> None:
    """Refuse 1:N lists whose probes are also gallery templates.

    A probe template that is in a gallery finds itself at rank 1 (score 1.0),
    so rank-N and TPIR figures read 100 % whatever the model.

    Args:
        galleries (list): ``(path, template_ids)`` per gallery CSV.
        probe (tuple): ``(path, template_ids)`` of the probe CSV.

    Raises:
        DataFormatError: Names the probe file, the gallery file, how many
            templates are shared and the first of them.
    """
    probe_path, probe_ids = probe
    for path, ids in galleries:
        shared = np.intersect1d(probe_ids, ids)
        if shared.size:
            raise DataFormatError(
                probe_path, f'{shared.size} of its {len(probe_ids)} probe '
                f'templates are also gallery templates of {path} (first: '
                f'{int(shared[0])}): each would find itself at rank 1 and make '
                'the 1:N figures meaningless; expected probe and gallery '
                'templates to be disjoint', field='TEMPLATE_ID')


def _check_landmark_layout(lmks: np.ndarray, path: str,
                           sample: int = 256) -> None:
    """Refuse a landmark file most of whose faces are in another layout.

    Checks ``sample`` faces spread over the file with
    :func:`~oaml_mm.datasets.transforms.landmark_layout_mistake`; single
    implausible faces (profiles) are normal, a majority sharing one mistake is a
    file written in another layout.

    Raises:
        DataFormatError: More than half of the sampled faces share one layout
            mistake; names the file and the mistake.
    """
    from oaml_mm.datasets.transforms import (LANDMARK_ORDER,
                                             landmark_layout_mistake)
    if not len(lmks):
        return
    idx = np.unique(np.linspace(0, len(lmks) - 1, min(sample, len(lmks)))
                    .astype(np.int64))
    found = [landmark_layout_mistake(lmks[i]) for i in idx]
    mistakes = [m for m in found if m]
    if mistakes:
        worst = max(set(mistakes), key=mistakes.count)
        if mistakes.count(worst) * 2 > len(idx):
            raise DataFormatError(
                path, f'{mistakes.count(worst)} of {len(idx)} sampled faces do '
                f'not look like faces but do when read as {worst}; expected '
                f'{LANDMARK_ORDER}')


@DATASETS.register_module()
class IJBDataset(BaseFaceDataset):
    """One sample per IJB-B/IJB-C image, with its template, media and landmarks.

    Samples carry ``template_id``, ``media_id``, ``faceness`` (metainfo) and
    ``landmarks`` ([5,2] in ``loose_crop`` pixels) for :class:`AlignFace5Points`.
    :meth:`template_pairs` returns the 1:1 protocol for the metric.

    Examples:
        >>> ijbc = dict(
        ...     type='IJBDataset', data_root='data/IJB_release/IJBC', subset='IJBC',
        ...     pipeline=[dict(type='AlignFace5Points'), dict(type='PackFaceInputs')])

    Args:
        data_root (str): Folder with ``meta/`` and ``loose_crop/``.
        subset (str): ``'IJBC'`` or ``'IJBB'``.
        **kwargs: See :class:`~oaml_mm.datasets.base_face_dataset.BaseFaceDataset`.
    """

    def __init__(self, data_root: str, subset: str = 'IJBC', **kwargs) -> None:
        self.subset = subset.upper().replace('-', '')
        self.paths = ijb_meta_paths(data_root, self.subset)
        kwargs.setdefault('test_mode', True)
        kwargs.setdefault('dataset_name', self.subset.lower())
        super().__init__(data_root=data_root, **kwargs)

    def load_index(self) -> int:
        names, self._tids, self._mids = read_ijb_tid_mid(self.paths['tid_mid'])
        lnames, self._lmks, self._faceness = read_ijb_landmarks(
            self.paths['landmarks'])
        if len(lnames) != len(names):
            raise DataFormatError(
                self.paths['landmarks'], f'{len(lnames)} images, but '
                f'{self.paths["tid_mid"]} lists {len(names)}; expected the same '
                'images in the same order')
        for i, (a, b) in enumerate(zip(names, lnames)):
            if a != b:
                raise DataFormatError(
                    self.paths['landmarks'], f'image {b!r}, but line {i + 1} of '
                    f'{self.paths["tid_mid"]} is {a!r}; expected the same order',
                    record=f'line {i + 1}')
        _check_landmark_layout(self._lmks, self.paths['landmarks'])
        self._names = np.array([n.encode('utf-8') for n in names],
                               dtype=np.bytes_)
        self._metainfo['subset'] = self.subset
        return len(names)

    def template_pairs(self):
        """The 1:1 protocol: ``(t1, t2, label)`` int64 arrays."""
        return read_ijb_template_pairs(self.paths['pairs'])

    def get_info(self, i: int) -> dict:
        name = self._names[i].decode('utf-8')
        return dict(
            img_path=osp.join(self.paths['images'], name), key=name,
            template_id=int(self._tids[i]), media_id=int(self._mids[i]),
            faceness=float(self._faceness[i]),
            landmarks=self._lmks[i].copy())

    def load_sample(self, info: dict) -> bool:
        path = info['img_path']
        if not osp.isfile(path):
            raise MissingFileError(path, 'IJB image listed in the meta files')
        img = self.decode(np.fromfile(path, np.uint8), path, info['key'])
        if img is None:
            return False
        info['img'] = img
        return True
