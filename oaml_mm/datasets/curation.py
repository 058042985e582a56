"""Data curation: per-sample quality and visibility, filtered list files, review lists.

* :func:`build_split_dataset` builds a config's data set for a tool; measurement
  tools (``filter_dataset.py``, ``review_dataset.py``, ``occlusion_report.py``)
  get it with its test-time pipeline (:func:`measurement_pipeline`: the random
  training augmentations removed), so a quality figure, an embedding or a mask
  belongs to the image as stored, not to one random draw of its augmentation.

* :func:`sample_stats` measures every sample once: mean true visibility (from its
  ``gt_visibility``: the mask of an ``OcclusionMaskDataset``, all ones otherwise),
  sharpness (variance of the Laplacian of the grey image, the usual focus measure:
  Pech-Pacheco et al., ICPR 2000), brightness and contrast (mean / std of grey).
* :func:`write_filtered_list` keeps the samples passing thresholds and writes them
  in the list format the data set class reads back as ``ann_file``
  (``FaceImageFolder``: ``<relative path> <label>``; ``OcclusionMaskDataset``:
  ``<name> <label>``).
* :func:`review_pairs` finds near-duplicate images (cosine of the embeddings above a
  threshold) and likely mislabelled samples (closer to another identity's centre than
  to their own) from a trained model's embeddings (:func:`embed_dataset`); exact
  search with faiss (``IndexFlatIP``); :func:`write_review_list` writes them as TSV.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from mmengine.logging import print_log

from oaml_mm.errors import ConfigError

__all__ = ['build_split_dataset', 'image_quality', 'sample_stats', 'list_entry',
           'write_filtered_list', 'embed_dataset', 'review_pairs',
           'write_review_list', 'REVIEW_COLUMNS', 'measurement_pipeline',
           'MEASUREMENT_TRANSFORMS']

#: Columns of the review list (:func:`write_review_list`).
REVIEW_COLUMNS = ('kind', 'score', 'a', 'b', 'label_a', 'label_b')

#: Transforms that do the same to every image (alignment, packing): the only ones a
#: measurement keeps. Every other transform (flip, augmenter, random occlusion,
#: medical masks...) is a random training augmentation and is removed.
MEASUREMENT_TRANSFORMS = ('AlignFace5Points', 'PackFaceInputs')


def measurement_pipeline(pipeline: Sequence) -> Tuple[List[dict], List[str]]:
    """The test-time version of a data pipeline, and what it removed.

    Args:
        pipeline (Sequence[dict]): Transform configs.

    Returns:
        tuple: ``(pipeline, removed)``: the transforms of
        :data:`MEASUREMENT_TRANSFORMS` in their order (``PackFaceInputs``
        appended when missing), and the type names removed.

    Examples:
        >>> measurement_pipeline([dict(type='FaceRandomFlip', prob=0.5),
        ...                       dict(type='PackFaceInputs')])
        ([{'type': 'PackFaceInputs'}], ['FaceRandomFlip'])
    """
    kept, removed = [], []
    for t in pipeline or ():
        name = t.get('type') if isinstance(t, dict) else type(t).__name__
        name = name if isinstance(name, str) else getattr(name, '__name__', '')
        if name.split('.')[-1] in MEASUREMENT_TRANSFORMS:
            kept.append(dict(t))
        else:
            removed.append(name)
    if not any(t['type'].split('.')[-1] == 'PackFaceInputs' for t in kept):
        kept.append(dict(type='PackFaceInputs'))
    return kept, removed


def _test_time(ds_cfg: Any, removed: List[str]) -> Any:
    """``ds_cfg`` with every ``pipeline`` in it (wrapped data sets too)
    replaced by its :func:`measurement_pipeline`."""
    if isinstance(ds_cfg, dict):
        out = {}
        for k, v in ds_cfg.items():
            if k == 'pipeline':
                v, gone = measurement_pipeline(v)
                removed.extend(gone)
            else:
                v = _test_time(v, removed)
            out[k] = v
        return out
    if isinstance(ds_cfg, (list, tuple)):
        return type(ds_cfg)(_test_time(v, removed) for v in ds_cfg)
    return ds_cfg


def build_split_dataset(cfg,
                        split: str = 'train',
                        part: Optional[int] = None,
                        pipeline: str = 'test'):
    """Build ``cfg.<split>_dataloader.dataset`` (first loader of a list).

    Args:
        cfg (Config): A loaded config.
        split (str): ``'train'``, ``'val'`` or ``'test'``.
        part (int, optional): For a ``ConcatDataset``, build only this part.
        pipeline (str): ``'test'`` (default: the test-time pipeline of
            :func:`measurement_pipeline`, for every tool that measures images)
            or ``'configured'`` (as the config has it, random augmentation
            included: for looking at what training sees).

    Raises:
        ConfigError: No such dataloader, ``part`` out of range, or an unknown
            ``pipeline``.
    """
    from mmengine.registry import init_default_scope

    from oaml_mm.registry import DATASETS
    loader = cfg.get(f'{split}_dataloader')
    if isinstance(loader, (list, tuple)):
        loader = loader[0] if loader else None
    if not loader:
        raise ConfigError(f'the config has no {split}_dataloader')
    ds_cfg = loader['dataset']
    if part is not None:
        parts = ds_cfg.get('datasets') if isinstance(ds_cfg, dict) else None
        if not parts or not 0 <= part < len(parts):
            raise ConfigError(f'{split}_dataloader.dataset has no part {part}')
        ds_cfg = parts[part]
    if pipeline not in ('test', 'configured'):
        raise ConfigError(f"pipeline must be 'test' or 'configured', got "
                          f'{pipeline!r}')
    if pipeline == 'test':
        removed: List[str] = []
        ds_cfg = _test_time(ds_cfg, removed)
        if removed:
            print_log(f'{split}_dataloader.dataset: measured with the test-time '
                      f'pipeline (removed {", ".join(sorted(set(removed)))})',
                      logger='current')
    init_default_scope('oaml_mm')
    return DATASETS.build(ds_cfg)


def image_quality(img: np.ndarray) -> Dict[str, float]:
    """Sharpness, brightness and contrast of an RGB uint8 image [H, W, 3].

    Examples:
        >>> image_quality(np.full((8, 8, 3), 100, np.uint8))['sharpness']
        0.0
    """
    grey = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
    return dict(sharpness=float(cv2.Laplacian(grey, cv2.CV_64F).var()),
                brightness=float(grey.mean()), contrast=float(grey.std()))


def sample_stats(dataset, indices: Optional[Sequence[int]] = None,
                 detector=None) -> List[Dict[str, object]]:
    """Quality and visibility of samples (read through the data set's pipeline).

    Args:
        dataset: A data set whose pipeline ends with ``PackFaceInputs``.
        indices (Sequence[int], optional): Only these samples.
        detector (callable, optional): ``detector(rgb_uint8) -> FaceDetections``
            (e.g. ``oaml_mm.models.FaceDetector``): adds ``face_score``, the
            highest face probability found in the image (0.0 when none).

    Returns:
        list[dict]: Per sample ``index``, ``key``, ``label`` (or None),
        ``visibility`` (mean of ``gt_visibility``, 1.0 without one), the
        :func:`image_quality` values and, with a detector, ``face_score``.
    """
    out = []
    for i in (range(len(dataset)) if indices is None else indices):
        item = dataset[int(i)]
        s = item['data_samples']
        img = item['inputs'].permute(1, 2, 0).numpy()  # PackFaceInputs: RGB
        label = int(s.gt_label.reshape(-1)[0]) if 'gt_label' in s else None
        vis = float(s.gt_visibility.float().mean()) \
            if 'gt_visibility' in s else 1.0
        row = dict(index=int(i), key=s.get('key'), label=label,
                   visibility=vis, **image_quality(img))
        if detector is not None:
            scores = detector(np.ascontiguousarray(img)).scores
            row['face_score'] = float(scores.max()) if len(scores) else 0.0
        out.append(row)
    return out


def list_entry(dataset, index: int) -> str:
    """The ``ann_file`` line of sample ``index`` for its data set class.

    Raises:
        ConfigError: The class reads no list file (e.g. ``MXFaceDataset``).
    """
    name = type(dataset).__name__
    if name not in ('FaceImageFolder', 'OcclusionMaskDataset'):
        raise ConfigError(f'{name} reads no list file; filtering writes lists '
                          'for FaceImageFolder and OcclusionMaskDataset')
    info = dataset.get_data_info(index)
    if info.get('gt_label') is None:
        raise ConfigError(f'{name} sample {index} has no label (labels.txt)')
    return f"{info['key']} {int(info['gt_label'])}"


def write_filtered_list(dataset, out_path: str,
                        stats: Sequence[Dict[str, object]],
                        min_visibility: float = 0.0,
                        min_sharpness: float = 0.0,
                        min_brightness: float = 0.0,
                        max_brightness: float = 255.0,
                        min_face_score: float = 0.0) -> Dict[str, int]:
    """Write the list file of the samples passing every threshold.

    Args:
        dataset: ``FaceImageFolder`` or ``OcclusionMaskDataset``.
        out_path (str): The list file to write (use it as the data set's
            ``ann_file``; relative paths are below ``data_root``).
        stats (Sequence[dict]): :func:`sample_stats` of the samples to consider.
        min_visibility (float): Smallest mean true visibility. Defaults to 0.
        min_sharpness (float): Smallest Laplacian variance. Defaults to 0.
        min_brightness (float): Smallest mean grey level. Defaults to 0.
        max_brightness (float): Largest mean grey level. Defaults to 255.
        min_face_score (float): Smallest detector face probability (needs
            ``face_score`` in ``stats``, :func:`sample_stats` with a detector).
            Defaults to 0.

    Returns:
        dict: ``kept`` and ``dropped`` counts and the drops per reason.
    """
    lines, counts = [], dict(kept=0, dropped=0, visibility=0, sharpness=0,
                             brightness=0, face_score=0)
    if min_face_score > 0 and stats and 'face_score' not in stats[0]:
        raise ConfigError('min_face_score needs face_score in the stats '
                          '(sample_stats with a detector)')
    for st in stats:
        why = []
        if st['visibility'] < min_visibility:
            why.append('visibility')
        if st['sharpness'] < min_sharpness:
            why.append('sharpness')
        if not min_brightness <= st['brightness'] <= max_brightness:
            why.append('brightness')
        if st.get('face_score', 1.0) < min_face_score:
            why.append('face_score')
        for w in why:
            counts[w] += 1
        if why:
            counts['dropped'] += 1
        else:
            counts['kept'] += 1
            lines.append(list_entry(dataset, st['index']))
    with open(out_path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + ('\n' if lines else ''))
    return counts


def embed_dataset(model, dataset, batch_size: int = 64,
                  max_images: Optional[int] = None
                  ) -> Tuple[np.ndarray, List[str], np.ndarray]:
    """Global embeddings of a data set's samples, through its own pipeline.

    Args:
        model: A recognizer in eval mode with ``data_preprocessor`` and
            ``extract(inputs) -> {'embedding': [B, D]}`` (``OAMLRecognizer``).
        dataset: A built data set with ``get_gt_labels()``; each sample packs
            ``inputs`` and a ``data_samples`` entry with a ``key``.
        batch_size (int): Samples per forward pass.
        max_images (int, optional): Only the first N samples.

    Returns:
        tuple: float32 embeddings [N, D], the N sample keys (str), int labels [N].
    """
    import torch
    from mmengine.dataset import pseudo_collate
    from torch.utils.data import DataLoader, Subset

    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    labels = np.asarray(dataset.get_gt_labels())[:n]
    embs, keys = [], []
    loader = DataLoader(Subset(dataset, range(n)), batch_size=batch_size,
                        collate_fn=pseudo_collate)
    with torch.no_grad():
        for data in loader:
            keys += [str(s.get('key')) for s in data['data_samples']]
            batch = model.data_preprocessor(data, False)
            embs.append(model.extract(batch['inputs'])['embedding'].float())
    dim = embs[0].shape[1] if embs else 0
    emb = torch.cat(embs).numpy() if embs else np.zeros((0, dim), np.float32)
    return emb, keys, labels


def write_review_list(rows: Sequence[Dict], out_path: str) -> None:
    """Write :func:`review_pairs` rows as a TSV with a :data:`REVIEW_COLUMNS` header."""
    with open(out_path, 'w', encoding='utf-8') as f:
        f.write('\t'.join(REVIEW_COLUMNS) + '\n')
        for r in rows:
            f.write('\t'.join(str(r[c]) for c in REVIEW_COLUMNS) + '\n')


def _neighbours(emb: np.ndarray, k: int):
    """Cosine similarities and indices of each row's ``k + 1`` nearest rows
    (itself included), exact inner-product search with faiss (``IndexFlatIP``)."""
    import faiss
    x = np.ascontiguousarray(emb, dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return index.search(x, min(k + 1, len(x)))


def review_pairs(embeddings: np.ndarray, labels: Sequence[int],
                 keys: Sequence[str], duplicate_cos: float = 0.95,
                 k: int = 5, mislabel_margin: float = 0.0) -> List[Dict]:
    """Near-duplicates and likely mislabelled samples, most suspicious first.

    Args:
        embeddings (np.ndarray): [N, D] (normalised here).
        labels (Sequence[int]): [N] identities.
        keys (Sequence[str]): [N] names for the review list.
        duplicate_cos (float): Cosine at or above which two images are listed
            as near-duplicates. Defaults to 0.95.
        k (int): Neighbours searched per image. Defaults to 5.
        mislabel_margin (float): A sample is listed when its cosine to another
            identity's centre exceeds the one to its own centre (computed without
            it) by more than this. Defaults to 0.

    Returns:
        list[dict]: ``kind`` (``'duplicate'`` / ``'mislabel'``), ``score``, ``a``,
        ``b`` (key of the other image / the closer identity), ``label_a``,
        ``label_b``; duplicates first (by cosine), then mislabels (by margin).
    """
    emb = np.asarray(embeddings, np.float32)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    labels = np.asarray(labels)
    out = []
    sims, ids = _neighbours(emb, k)
    seen = set()
    for i in range(len(emb)):
        for s, j in zip(sims[i], ids[i]):
            j = int(j)
            if j == i or j < 0 or s < duplicate_cos:
                continue
            pair = (min(i, j), max(i, j))
            if pair in seen:
                continue
            seen.add(pair)
            out.append(dict(kind='duplicate', score=float(s), a=keys[pair[0]],
                            b=keys[pair[1]], label_a=int(labels[pair[0]]),
                            label_b=int(labels[pair[1]])))
    out.sort(key=lambda r: -r['score'])
    classes, inv = np.unique(labels, return_inverse=True)
    sums = np.zeros((len(classes), emb.shape[1]), np.float64)
    np.add.at(sums, inv, emb)
    counts = np.bincount(inv, minlength=len(classes)).astype(np.float64)
    centres = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True),
                                1e-12)
    mis = []
    for r0 in range(0, len(emb), 4096):
        e = emb[r0:r0 + 4096]
        c = inv[r0:r0 + 4096]
        rows = np.arange(len(e))
        cos = e @ centres.T
        # Own centre without the sample itself (else a lone outlier pulls it).
        own_c = sums[c] - e
        own = (own_c * e).sum(1) / np.maximum(np.linalg.norm(own_c, axis=1),
                                              1e-12)
        cos[rows, c] = -np.inf
        other = cos.argmax(1)
        margin = cos[rows, other] - own
        for j in np.flatnonzero((margin > mislabel_margin) & (counts[c] >= 2)):
            i = r0 + int(j)
            mis.append(dict(kind='mislabel', score=float(margin[j]), a=keys[i],
                            b=f'identity {int(classes[other[j]])}',
                            label_a=int(labels[i]),
                            label_b=int(classes[other[j]])))
    mis.sort(key=lambda r: -r['score'])
    return out + mis
