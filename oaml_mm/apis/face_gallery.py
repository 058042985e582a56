"""FaceGallery: enrol identities, save them to one file, search probes.

Search is the usual two-stage retrieval: an exact cosine nearest-neighbour search over
the identity embeddings (faiss' flat inner-product index when faiss is installed, one
matrix product otherwise), then the top candidates are re-ranked with the model's
occlusion-aware QAConv matcher against each identity's stored template map (QAConv's
use as a re-ranker follows Liao & Shao, ECCV 2020). An identity enrolled with several
images is one template pooled exactly as the evaluation layer pools IJB templates
(:class:`~oaml_mm.evaluation.functional.TemplateAccumulator`: norm-keeping embeddings
summed, feature maps averaged per cell weighted by visibility), each image counted as
its own media. Enrolling a name again adds its images to the same template.
``FaceGallery(recognizer, pooling='visibility')`` pools by the visibility rule instead
(embeddings weighted by each image's mean visibility, see docs/evaluation.md); the
rule is stored in the file. Templates pool the raw predicted maps (the matcher
calibrates them with the model's ``vis_range``), or, with the model's
``test_cfg.pool_vis='calibrated'``, each image's calibrated map (docs/models.md,
"Stretching the maps"); the file records which (``pooled_vis_range``, None: raw), and
is searched and extended as it was made (files before version 4 pooled the raw maps).

The file is a weights-only torch file (tensors, strings, numbers, lists, dicts) with a
format name and version; it is written atomically and read with the weights-only
unpickler, so a damaged, foreign or malicious file raises :class:`GalleryError`.
"""
import contextlib
import glob
import hashlib
import os
import os.path as osp
import unicodedata
import zipfile
from typing import Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from filelock import FileLock
from mmengine.logging import print_log

from oaml_mm.errors import (CheckpointError, ConfigError, GalleryError,
                            ImageInputError)
from oaml_mm.evaluation.functional import (FUSED_VIS, POOLINGS,
                                           TemplateAccumulator,
                                           apply_visibility_fusion,
                                           fusion_mean_visibility,
                                           fusion_vis_range, mean_visibility)
from oaml_mm.models.functional import calibrate_visibility, check_vis_range
from oaml_mm.models.utils import embedding_settings, settings_differences
from oaml_mm.utils import atomic_save, safe_load_checkpoint
from .face_recognizer import BRANCH_UNITS, FaceRecognizer
from .inputs import ImageLike

__all__ = ['FaceGallery', 'GALLERY_FORMAT', 'GALLERY_VERSION', 'model_fingerprint',
           'check_identity_name', 'template_settings']

GALLERY_FORMAT = 'oaml_mm.FaceGallery'
#: 2: the file records :func:`template_settings` (version 1 files still load).
#: 3: ``model_fingerprint`` is a BLAKE2b digest of every weight byte
#: (:func:`model_fingerprint`); versions 1 and 2 hold the older sampled hash
#: and are checked with it.
#: 4: templates pool the calibrated map, whose calibration the file records
#: (``pooled_vis_range``); versions 1 to 3 pooled the raw map.
GALLERY_VERSION = 4


def model_fingerprint(model: torch.nn.Module) -> str:
    """A digest of a model's weights: galleries only fit the model that made them.

    BLAKE2b (16 bytes) over every ``state_dict`` entry's name, dtype, shape and
    bytes, in ``state_dict`` order, so any change to any weight changes it
    (0.3 s for the 260 MiB of an IR-101 measured on one CPU core; once per
    gallery load).

    Returns:
        str: ``'b2:'`` followed by 32 hex digits.
    """
    h = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f'{name}|{t.dtype}|{tuple(t.shape)}|'.encode())
        h.update(t.view(torch.uint8).numpy())
    return 'b2:' + h.hexdigest()


def _sampled_fingerprint(model: torch.nn.Module) -> str:
    """The fingerprint of gallery versions 1 and 2 (shape, sum, first values).

    Kept only to check files written then; it misses changes that keep every
    tensor's sum and first 16 values.
    """
    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        flat = t.detach().reshape(-1)[:16].double().cpu()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(np.float64(t.detach().double().sum().item()).tobytes())
        h.update(flat.numpy().tobytes())
    return h.hexdigest()[:16]


def template_settings(recognizer: FaceRecognizer) -> dict:
    """Everything besides the weights that shapes a template, as plain values.

    A template made under one of these settings does not fit a probe made under
    another (an image enrolled in BGR and searched in RGB no longer scores
    near 1 against itself), so a gallery records them and
    :meth:`FaceGallery.load` refuses a recognizer whose settings differ, naming
    each difference.

    Returns:
        dict: ``model`` (class), ``absent_parts`` (parts the checkpoint lacked),
        ``input_size``, ``channel_order``, ``mean``, ``std`` (per channel,
        6 decimals), ``flip_test``, ``global_vis``, ``global_vis_range``,
        ``vis_range`` (a gallery written before it was recorded is compared on
        the others).
    """
    settings = embedding_settings(recognizer.model)
    settings['absent_parts'] = sorted(
        getattr(recognizer, 'absent_parts', []) or [])
    settings['input_size'] = int(recognizer.input_size)
    return settings


def _faiss():
    try:
        import faiss  # noqa: F401
        return faiss
    except ImportError:
        return None


# Bounds of a gallery's declared sizes: far above any face model (512-d embeddings,
# 7x7 or 14x14 maps of <= 2048 channels), far below a size that exhausts memory.
_MAX_EMB_DIM = 1 << 16
_MAX_MAP_SIDE = 4096
_MAX_MAP_VALUES = 1 << 24


def check_identity_name(name) -> str:
    """Return the canonical form of ``name`` if it can name an identity, else raise.

    A name is printed one per line in search results and listings: an empty or
    blank one, or one holding a newline or other control character, would make
    those lines ambiguous (or forge extra ones). Names that differ only in
    Unicode normalisation (``'José'`` typed as one code point or as ``e`` plus a
    combining accent) or in leading/trailing blanks are one name: the canonical
    form is NFC without surrounding white space.

    Raises:
        ImageInputError: Not a string, empty after stripping spaces, or holding
            control characters (Unicode category ``C``: newline, tab, NUL, ...).
    """
    if not isinstance(name, str) or not name.strip():
        raise ImageInputError(f'identity name must be a non-empty string '
                              f'(not only spaces), got {name!r}')
    bad = [c for c in name if unicodedata.category(c).startswith('C')]
    if bad:
        raise ImageInputError(
            f'identity name {name!r} holds control character(s) {bad[0]!r}; '
            'expected printable text on one line')
    return unicodedata.normalize('NFC', name).strip()


def _int_in(value, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and \
        lo <= value <= hi


def _checked_accumulator(path: str, state: dict, n: int,
                         pooling: str = 'mean') -> TemplateAccumulator:
    """The template accumulator of a loaded gallery, every field checked first.

    Declared sizes are validated and every stored tensor is compared with the
    shape they imply before anything is allocated (a crafted file can declare
    ``emb_dim`` 2**40); the stored tensors are then adopted, not copied.

    Raises:
        GalleryError: A size out of range, a tensor of the wrong type, shape or
            dtype, or a non-finite or negative value; names the field.
    """
    emb_dim = state.get('emb_dim')
    if not _int_in(emb_dim, 1, _MAX_EMB_DIM):
        raise GalleryError(f'{path}: field emb_dim is {emb_dim!r}; expected an '
                           f'integer in [1, {_MAX_EMB_DIM}]')
    map_shape = state.get('map_shape')
    if map_shape is not None:
        if not isinstance(map_shape, (list, tuple)) or len(map_shape) != 3 or \
                not all(_int_in(x, 1, _MAX_MAP_SIDE) for x in map_shape) or \
                map_shape[0] * map_shape[1] * map_shape[2] > _MAX_MAP_VALUES:
            raise GalleryError(
                f'{path}: field map_shape is {map_shape!r}; expected [C, h, w] '
                f'with sides in [1, {_MAX_MAP_SIDE}] and C*h*w <= '
                f'{_MAX_MAP_VALUES}')
        c, h, w = (int(x) for x in map_shape)
    expected = dict(weight=((n, ), (torch.float64, )),
                    count=((n, ), (torch.int64, )),
                    emb_sum=((n, emb_dim), (torch.float32, )))
    if map_shape is not None:
        expected.update(
            map_mean=((n, c, h * w), (torch.float16, torch.float32,
                                      torch.bfloat16)),
            vis_sum=((n, h * w), (torch.float32, )))
        if pooling == 'visibility':
            expected['vis_num'] = ((n, h * w), (torch.float32, ))
    for key, (shape, dtypes) in expected.items():
        value = state.get(key)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape \
                or value.dtype not in dtypes:
            found = (f'{type(value).__name__}' if not isinstance(
                value, torch.Tensor) else f'{value.dtype} {tuple(value.shape)}')
            raise GalleryError(
                f'{path}: field {key} is {found}; expected a tensor of shape '
                f'{shape} ({n} names) and dtype {dtypes[0]}')
        if value.is_floating_point() and not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise GalleryError(
                f'{path}: field {key} holds {bad} non-finite values (NaN/inf); '
                'expected finite templates (re-enrol the identities)')
        if key != 'emb_sum' and key != 'map_mean' and bool((value < 0).any()):
            raise GalleryError(f'{path}: field {key} holds negative values')
    empty = (state['weight'] <= 0) | (state['count'] <= 0) | \
        ~state['emb_sum'].ne(0).any(1)
    if bool(empty.any()):
        i = int(empty.nonzero()[0, 0])
        raise GalleryError(
            f'{path}: identity {i} has an empty template (weight '
            f'{float(state["weight"][i]):g}, count {int(state["count"][i])}, '
            f'embedding sum all zero: {not bool(state["emb_sum"][i].ne(0).any())})'
            '; expected every identity enrolled from at least one image')
    if map_shape is None and any(state.get(k) is not None
                                 for k in ('map_mean', 'vis_sum', 'vis_num')):
        raise GalleryError(
            f'{path}: fields map_mean/vis_sum/vis_num without map_shape')
    map_dtype = state['map_mean'].dtype if map_shape is not None else \
        torch.float16
    acc = TemplateAccumulator(0, emb_dim, None if map_shape is None else
                              (c, h, w), map_dtype, pooling=pooling)
    for key in expected:
        setattr(acc, key, state[key])
    acc.num_templates = n
    return acc


def _check_settings(path: str, state: dict, now: dict) -> None:
    """Refuse a gallery whose templates were made under other settings."""
    stored = state.get('template_settings')
    if stored is None and state.get('version') == 1:
        print_log(f'{path}: written before galleries recorded their template '
                  'settings (channel order, mean/std, flip test, input size); '
                  'they cannot be checked against this config. Saving it again '
                  'records the current ones', logger='current', level=30)
        return
    if not isinstance(stored, dict):
        raise GalleryError(f'{path}: field template_settings is '
                           f'{type(stored).__name__}; expected a dict')
    diff = [f'{k} {old!r} in the gallery vs {v!r} now'
            for k, old, v in settings_differences(stored, now)]
    if diff:
        raise GalleryError(
            f'{path}: the gallery\'s templates were made under other settings '
            f'than this recognizer\'s: {"; ".join(diff)}. Use the config they '
            'were enrolled with, or enrol the identities again')


def _stored_pooled_range(path: str, state: dict, gallery: 'FaceGallery'):
    """The calibration a loaded gallery's templates were pooled with.

    Files before version 4 pooled the raw maps: they are searched (the matcher
    calibrates template and probe, as when they were written) and extended
    (new images pooled raw too) as they were made, with a log line when the
    model now calibrates its maps.

    Raises:
        GalleryError: A malformed ``pooled_vis_range`` field.
    """
    if state.get('version', 0) < 4:
        if gallery.pooled_vis_range is not None:
            # Only with test_cfg.pool_vis='calibrated'.
            print_log(f'{path}: gallery version {state.get("version")}: its '
                      'templates pool the raw visibility maps, where this '
                      "model's test_cfg.pool_vis='calibrated' pools them "
                      f'calibrated by {list(gallery.pooled_vis_range)}; '
                      'searched and extended as they were made. Enrol the '
                      'identities into a new gallery to pool the calibrated '
                      'map', logger='current', level=30)
        return None
    value = state.get('pooled_vis_range')
    try:
        pooled = check_vis_range(value)
    except ConfigError:
        raise GalleryError(f'{path}: field pooled_vis_range is {value!r}; '
                           'expected None or [low, high] with 0 <= low < '
                           'high <= 1') from None
    # Templates pool either the raw map (None) or the map calibrated by the
    # model's vis_range, which template_settings records.
    recorded = state.get('template_settings')
    recorded = recorded.get('vis_range', pooled) if isinstance(
        recorded, dict) else pooled
    if pooled is not None and (recorded is None or [
            round(float(v), 6) for v in pooled] != [
                round(float(v), 6) for v in recorded]):
        raise GalleryError(
            f'{path}: the file contradicts itself: its templates pool maps '
            f'calibrated by pooled_vis_range {list(pooled)!r}, but its '
            f'template_settings record vis_range {recorded!r}. Enrol the '
            'identities into a new gallery')
    return pooled


def _remove_stale_tmp(path: str) -> None:
    """Remove what a save of ``path`` killed mid-write left (``path.*.tmp``)."""
    target = osp.realpath(path) if osp.islink(path) else path
    for tmp in glob.glob(glob.escape(target) + '.*.tmp'):
        try:
            os.remove(tmp)
        except OSError:
            pass


class FaceGallery:
    """A searchable set of enrolled identities.

    Examples::

        gallery = FaceGallery(recognizer)
        gallery.enrol('alice', ['alice_1.jpg', 'alice_2.jpg'])
        gallery.enrol('alice', 'alice_3.jpg')        # extends alice
        gallery.save('staff.pt')
        gallery = FaceGallery.load('staff.pt', recognizer)
        hits = gallery.search('probe.jpg', top_k=5)
        hits[0]['name'], hits[0]['score']

    Args:
        recognizer (FaceRecognizer): Extracts the features; its model must be the
            one the gallery was built with.
        map_dtype (torch.dtype): Storage of the template maps. Defaults to fp16
            (the evaluation layer's choice; 49 x C values per identity).
        pooling (str): How an identity's images pool: ``'mean'`` or
            ``'visibility'`` (:class:`TemplateAccumulator`). Defaults to 'mean'.

    Raises:
        ConfigError: An unknown ``pooling``.
    """

    def __init__(self, recognizer: FaceRecognizer,
                 map_dtype: torch.dtype = torch.float16,
                 pooling: str = 'mean') -> None:
        if pooling not in POOLINGS:
            raise ConfigError(f'FaceGallery pooling={pooling!r}: expected one '
                              f'of {POOLINGS}')
        self.recognizer = recognizer
        self.map_dtype = map_dtype
        self.pooling = pooling
        self.names: List[str] = []
        self._index: Dict[str, int] = {}
        self.acc: Optional[TemplateAccumulator] = None
        self.fingerprint = model_fingerprint(recognizer.model)
        self.settings = template_settings(recognizer)
        #: The calibration each image's visibility went through before it
        #: was pooled: the model's ``vis_range`` with
        #: ``test_cfg.pool_vis='calibrated'`` (``pool_vis_range``), else None
        #: (the raw map, as galleries written before version 4 pooled; the
        #: matcher calibrates template and probe maps).
        self.pooled_vis_range = getattr(recognizer.model, 'pool_vis_range',
                                        None)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: str) -> bool:
        return isinstance(name, str) and \
            unicodedata.normalize('NFC', name).strip() in self._index

    def images_of(self, name: str) -> int:
        """Number of images enrolled under ``name`` (canonical form, see
        :func:`check_identity_name`)."""
        if name not in self:
            return 0
        return int(self.acc.count[self._index[check_identity_name(name)]])

    # ------------------------------------------------------------- enrolment
    def enrol(self, name: str, images: Union[ImageLike, Sequence[ImageLike]],
              channel_order: Optional[str] = None, landmarks=None) -> int:
        """Add images of one identity (a name seen before is extended).

        Args:
            name (str): Identity name.
            images: One image or a list (see :meth:`FaceRecognizer.extract`).
            channel_order (str, optional): ``'rgb'``/``'bgr'`` of arrays.
            landmarks: 5 landmarks per unaligned image.

        Returns:
            int: Images enrolled under ``name`` in total.
        """
        name = check_identity_name(name)
        feats = self.recognizer.extract(images, channel_order, landmarks,
                                        return_feature_maps=True)
        return self.enrol_features(name, feats)

    def enrol_features(self, name: str, feats: Dict[str, torch.Tensor]) -> int:
        """:meth:`enrol` for features :meth:`FaceRecognizer.extract` returned
        (with ``feature_map``)."""
        name = check_identity_name(name)
        n = feats['embedding'].shape[0]
        if self.acc is None:
            self.acc = TemplateAccumulator(
                0, feats['embedding'].shape[1],
                tuple(feats['feature_map'].shape[1:]), self.map_dtype,
                pooling=self.pooling)
        if name not in self._index:
            self._index[name] = len(self.names)
            self.names.append(name)
            self.acc.grow(len(self.names))
        row = self._index[name]
        # The map the matcher reads weighs the cells (and, by the visibility
        # rule, the embeddings).
        self.acc.add(torch.full((n, ), row, dtype=torch.int64),
                     feats['embedding'] * feats['norm'], feats['feature_map'],
                     calibrate_visibility(feats['visibility'],
                                          self.pooled_vis_range))
        return self.images_of(name)

    # ------------------------------------------------------------------ files
    def state(self) -> dict:
        """The gallery as plain tensors and containers (what :meth:`save` writes)."""
        acc = self.acc
        return dict(
            format=GALLERY_FORMAT, version=GALLERY_VERSION,
            model_fingerprint=self.fingerprint, names=list(self.names),
            pooling=self.pooling, template_settings=dict(self.settings),
            pooled_vis_range=None if self.pooled_vis_range is None else
            [float(v) for v in self.pooled_vis_range],
            emb_dim=None if acc is None else int(acc.emb_dim),
            map_shape=None if acc is None else list(acc.map_shape),
            weight=None if acc is None else acc.weight.clone(),
            count=None if acc is None else acc.count.clone(),
            emb_sum=None if acc is None else acc.emb_sum.clone(),
            map_mean=None if acc is None else acc.map_mean.clone(),
            vis_sum=None if acc is None else acc.vis_sum.clone(),
            vis_num=None if acc is None or acc.vis_num is None else
            acc.vis_num.clone())

    def save(self, path: str) -> None:
        """Write the gallery to ``path`` atomically (old file or whole new one).

        The file gets the user's usual mode (umask), a symbolic link is
        followed (the file it names is replaced), and a failed write leaves no
        temporary file (:func:`~oaml_mm.utils.atomic_save`).
        """
        atomic_save(self.state(), path, encode=False)

    @classmethod
    def load(cls, path: str, recognizer: FaceRecognizer,
             check_model: bool = True) -> 'FaceGallery':
        """Read a gallery file written by :meth:`save`.

        Args:
            path (str): The file.
            recognizer (FaceRecognizer): The model to search with.
            check_model (bool): Refuse a gallery made with other weights or
                under other template settings (:func:`template_settings`).

        Raises:
            GalleryError: Missing, damaged (any byte: the file's CRC-32s are
                verified, :func:`~oaml_mm.utils.checkpoint.check_checkpoint_file`),
                unsafe, another format or version, made with another model or
                under other template settings (:func:`template_settings`; the
                message names each difference), declaring sizes out of range or
                that its tensors do not have, holding NaN/inf templates or a name
                twice (all checked before anything is allocated).
        """
        path = str(path)
        if not osp.isfile(path):
            raise GalleryError(f'{path}: no such gallery file')
        with open(path, 'rb') as f:
            magic = f.read(2)
        if not zipfile.is_zipfile(path) and magic[:1] != b'\x80':
            # torch.save writes a zip archive (a bare pickle before torch 1.6);
            # the unpickler's complaint about a text file ("opcode INST") says
            # nothing useful.
            raise GalleryError(
                f'{path}: not a gallery file (neither a torch zip archive nor '
                'a pickle); expected a file written by FaceGallery.save / '
                'tools/infer.py enrol')
        try:
            state = safe_load_checkpoint(path, decode=False)
        except CheckpointError as e:
            raise GalleryError(f'{path}: not a readable gallery file ({e})') \
                from None
        if not isinstance(state, dict) or state.get('format') != GALLERY_FORMAT:
            found = state.get('format') if isinstance(state, dict) else \
                type(state).__name__
            raise GalleryError(
                f'{path}: not an oaml_mm gallery file (format {found!r})')
        if state.get('version') not in range(1, GALLERY_VERSION + 1):
            raise GalleryError(
                f'{path}: gallery version {state.get("version")!r}; this oaml_mm '
                f'reads versions 1 to {GALLERY_VERSION} (re-enrol the identities)')
        # Files written before the option pool by the mean rule.
        pooling = state.get('pooling', 'mean')
        if not isinstance(pooling, str) or pooling not in POOLINGS:
            raise GalleryError(f'{path}: field pooling is {pooling!r}; '
                               f'expected one of {POOLINGS}')
        gallery = cls(recognizer, pooling=pooling)
        gallery.pooled_vis_range = _stored_pooled_range(path, state, gallery)
        # Versions 1 and 2 stored the older sampled hash: check with it.
        mine = (gallery.fingerprint if state.get('version') >= 3
                else _sampled_fingerprint(recognizer.model))
        if check_model and state.get('model_fingerprint') != mine:
            raise GalleryError(
                f'{path}: the gallery was made with other model weights '
                f'(fingerprint {state.get("model_fingerprint")} vs '
                f'{mine}); its templates do not fit this model')
        if check_model:
            _check_settings(path, state, gallery.settings)
        names = state.get('names')
        if not isinstance(names, list):
            raise GalleryError(
                f'{path}: field names must be a list of non-empty strings')
        try:
            names = [check_identity_name(n) for n in names]
        except ImageInputError as e:
            raise GalleryError(f'{path}: field names: {e}') from None
        if len(set(names)) != len(names):
            seen = set()
            dup = next(n for n in names if n in seen or seen.add(n))
            raise GalleryError(
                f'{path}: field names lists {dup!r} twice; expected each '
                'identity once (one template per name)')
        if names:
            gallery.acc = _checked_accumulator(path, state, len(names),
                                               pooling)
            gallery.map_dtype = gallery.acc.map_dtype
        gallery.names = list(names)
        gallery._index = {n: i for i, n in enumerate(names)}
        return gallery

    @classmethod
    @contextlib.contextmanager
    def updating(cls, path: str, recognizer: FaceRecognizer,
                 timeout: float = -1,
                 pooling: Optional[str] = None) -> Iterator['FaceGallery']:
        """Load (or start) the gallery at ``path``, yield it, save it on exit.

        The whole load -> change -> save runs under an OS file lock on
        ``path + '.lock'`` (the ``filelock`` library), so two processes enrolling
        into one file take turns and the second sees the first's identities;
        without it the later save drops the earlier one's enrolment. The file is
        not written when the body raises, nor when loading it fails (a damaged
        gallery is refused, never re-saved with fresh checksums). Temporary files
        a killed save left (``GALLERY.*.tmp``) are removed under the lock.

        Examples::

            with FaceGallery.updating('staff.pt', recognizer) as gallery:
                gallery.enrol('alice', ['alice_1.jpg'])

        Args:
            path (str): Gallery file (created if missing).
            recognizer (FaceRecognizer): The model.
            timeout (float): Seconds to wait for the lock (-1: forever).
            pooling (str, optional): Rule of a new gallery (None: 'mean'). An
                existing file keeps its own; naming another rule for it is a
                ``GalleryError`` (its templates were pooled by its rule).

        Raises:
            GalleryError: As :meth:`load`, the lock was not had in time, or
                the lock path is not a file (a folder, say).
        """
        from filelock import Timeout
        path = str(path)
        lock_path = path + '.lock'
        try:
            lock = FileLock(lock_path, timeout=timeout)
            lock.acquire()
        except Timeout:
            raise GalleryError(f'{path}: another process holds {path}.lock for '
                               f'more than {timeout} s') from None
        except OSError as e:
            raise GalleryError(
                f'{lock_path}: cannot take the gallery\'s lock file '
                f'({e.strerror or e}); expected a regular file there (remove '
                'what is in its place)') from None
        try:
            # Under the lock no other save is in progress: temporary files of
            # this gallery are what a killed save left behind.
            _remove_stale_tmp(path)
            gallery = cls.load(path, recognizer) if osp.exists(path) else \
                cls(recognizer, pooling=pooling or 'mean')
            if pooling is not None and gallery.pooling != pooling:
                raise GalleryError(
                    f'{path}: the gallery pools templates by {gallery.pooling!r}, '
                    f'not {pooling!r} as asked; enrol with pooling='
                    f'{gallery.pooling!r} or into a new gallery file')
            yield gallery
            gallery.save(path)
        finally:
            lock.release()

    # ----------------------------------------------------------------- search
    def _nearest(self, query: torch.Tensor, k: int):
        """Exact cosine top-k of ``query`` [P, D] against the identities."""
        emb = self.acc.embeddings().float()
        faiss = _faiss()
        if faiss is not None:
            index = faiss.IndexFlatIP(emb.shape[1])
            index.add(np.ascontiguousarray(emb.numpy(), dtype=np.float32))
            sims, idx = index.search(
                np.ascontiguousarray(query.float().numpy(), dtype=np.float32), k)
            return torch.from_numpy(sims), torch.from_numpy(idx).long()
        sims = query.float() @ emb.T
        return sims.topk(k, dim=1)

    def search(self, probe: ImageLike, top_k: int = 5, rerank: bool = True,
               rerank_k: int = 20, channel_order: Optional[str] = None,
               landmarks=None) -> List[dict]:
        """Nearest identities of one probe image.

        Args:
            probe: The probe image.
            top_k (int): Identities to return.
            rerank (bool): Re-rank the cosine candidates with QAConv.
            rerank_k (int): Cosine candidates to re-rank (at least ``top_k``).
            channel_order (str, optional): ``'rgb'``/``'bgr'`` of an array.
            landmarks: 5 landmarks of an unaligned probe.

        Returns:
            list[dict]: Best first: ``name``, ``score`` (what the ranking used),
            ``adaface`` (cosine) and, when re-ranked, ``qaconv`` and ``fused``;
            and the open-set decision as :meth:`FaceRecognizer.compare` gives
            it: ``branch`` (whose score ranked), ``unit``, ``threshold`` (the
            recognizer's threshold of that branch, None when unknown),
            ``threshold_source`` and ``same`` (``score >= threshold``; None
            without a threshold). A stranger's rank-1 hit has ``same`` False.
        """
        feats = self.recognizer.extract(
            probe, channel_order, None if landmarks is None else [landmarks],
            return_feature_maps=True)
        return self.search_features(feats, top_k, rerank, rerank_k)[0]

    def _fused_vis(self, cos: np.ndarray, q: np.ndarray,
                   probe_vis: torch.Tensor,
                   cand: torch.Tensor) -> Optional[np.ndarray]:
        """The visibility-aware fused scores of one probe against candidate
        templates, or None when the templates' visibility on the map the
        fusion was fitted on is unknown.

        A template's visibility is the mean of its pooled visibility map, as
        for IJB templates (``IJBMetric``): the pooled map itself when it was
        pooled calibrated by the fusion's ``vis_range``, the pooled raw map
        calibrated by it otherwise (one image: exactly the face's visibility
        as :meth:`FaceRecognizer.compare` reads it). Templates pooled
        calibrated under another range than the fusion's (a fusion fitted on
        the raw map before the range was recorded) give None.
        """
        params = self.recognizer.vis_fusion
        if params is None:
            return None
        fitted = fusion_vis_range(params)
        pooled = self.acc.visibility(cand)
        if self.pooled_vis_range is None:
            tv = fusion_mean_visibility(params, pooled)
        elif fitted is not None and tuple(fitted) == tuple(
                self.pooled_vis_range):
            tv = mean_visibility(pooled)
        else:
            return None
        pv = fusion_mean_visibility(params, probe_vis)
        return apply_visibility_fusion(params, cos, q,
                                       np.full(len(cos), float(pv[0])), tv)

    @torch.no_grad()
    def search_features(self, feats: Dict[str, torch.Tensor], top_k: int = 5,
                        rerank: bool = True,
                        rerank_k: int = 20) -> List[List[dict]]:
        """:meth:`search` for a batch of extracted probes (one list per probe).

        Hits are ranked and decided on the recognizer's
        :attr:`~FaceRecognizer.decision_branch`, as
        :meth:`FaceRecognizer.compare` decides: ``fused_vis`` (the templates'
        visibility as :meth:`_fused_vis` reads it; where it is unknown, the
        ``fused`` branch compare falls back to), ``fused``, ``qaconv`` or
        ``adaface`` (``qaconv`` when that ``fused`` is not available either).
        An ``adaface`` branch that was neither asked for
        (``decision_branch``) nor has a threshold (an uncalibrated model)
        ranks by ``qaconv`` (deciding only with a given ``qaconv``
        threshold). Without re-ranking it is the cosine (``adaface``). Each
        hit's ``same`` compares that score with the recognizer's threshold
        of the same branch.
        """
        for key, value in (('top_k', top_k), ('rerank_k', rerank_k)):
            if not _int_in(value, 1, 1 << 31):
                raise ImageInputError(f'{key} must be a positive integer, got '
                                      f'{value!r}')
        if not self.names:
            raise GalleryError('the gallery is empty: enrol identities first')
        rerank = rerank and self.recognizer.has_qaconv
        k = min(len(self.names), max(top_k, rerank_k if rerank else top_k))
        sims, idx = self._nearest(feats['embedding'], k)
        results = []
        for p in range(sims.shape[0]):
            cand = idx[p]
            cos = sims[p].double().numpy()
            rows = [dict(name=self.names[int(c)], adaface=float(s))
                    for c, s in zip(cand, cos)]
            if rerank:
                probe_vis = feats['visibility'][p:p + 1]
                pooled = self.pooled_vis_range is not None
                if pooled:
                    # Templates hold calibrated maps: the probe's is
                    # calibrated the same way and neither is stretched again.
                    probe_vis = calibrate_visibility(probe_vis,
                                                     self.pooled_vis_range)
                q = self.recognizer.model.match(
                    feats['feature_map'][p:p + 1].to(self.recognizer.device),
                    self.acc.maps(cand).float().to(self.recognizer.device),
                    probe_vis.to(self.recognizer.device),
                    self.acc.visibility(cand).to(self.recognizer.device),
                    calibrated=pooled)
                q = q.reshape(-1).double().cpu().numpy()
                scored = dict(qaconv=q, fused=self.recognizer.fuse(cos, q))
                if self.recognizer.decision_branch == FUSED_VIS:
                    scored[FUSED_VIS] = self._fused_vis(
                        cos, q, feats['visibility'][p:p + 1], cand)
                scored = {b: v for b, v in scored.items() if v is not None}
                for i, row in enumerate(rows):
                    row.update({b: float(v[i]) for b, v in scored.items()})
                # compare's deciding branch; fused_vis without the template
                # visibility it reads: the branch compare falls back to.
                key = self.recognizer.decision_branch
                if key == 'adaface' and not (
                        self.recognizer.decision_branch_given
                        or 'adaface' in self.recognizer.thresholds):
                    # Uncalibrated, nothing asked: re-ranked by QAConv.
                    key = 'qaconv'
                elif key not in scored and key != 'adaface':
                    key = 'fused' if 'fused' in scored else 'qaconv'
            else:
                key = 'adaface'
            thr = self.recognizer.thresholds.get(key)
            source = None if thr is None else self.recognizer._source(key)
            for row in rows:
                row['score'] = row[key]
                row.update(branch=key, unit=BRANCH_UNITS[key],
                           threshold=None if thr is None else float(thr),
                           threshold_source=source,
                           same=None if thr is None else
                           bool(row['score'] >= thr))
                if thr is None and self.recognizer.calibration_problem:
                    row['no_threshold_reason'] = \
                        self.recognizer.calibration_problem
            rows.sort(key=lambda r: -r['score'])
            results.append(rows[:top_k])
        return results
