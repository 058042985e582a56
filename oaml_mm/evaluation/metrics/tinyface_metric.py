"""TinyFaceMetric: closed-set rank-k identification on TinyFace's test protocol.

TinyFace (Cheng, Zhu & Gong, ACCV 2018) scores every probe against the gallery, which
is the gallery-match images padded with the distractor images; a probe is a hit at
rank k when an image of its subject is among its k most similar gallery images. The
protocol reports rank-1, rank-5 and rank-20 (as AdaFace's ``validation_lq`` does,
with cosine similarity of the embeddings). The math is
:func:`oaml_mm.evaluation.functional.identification_1n`.
"""
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric

from oaml_mm.datasets.tinyface import tinyface_role_subject
from oaml_mm.errors import ConfigError, DataFormatError
from oaml_mm.evaluation.functional import identification_1n
from oaml_mm.registry import METRICS

__all__ = ['TinyFaceMetric']


@METRICS.register_module()
class TinyFaceMetric(BaseMetric):
    """Rank-k identification of TinyFace probes against matches + distractors.

    Reads each prediction's ``embedding`` and the sample's ``key``
    (``Probe/12_3.jpg``, as :class:`~oaml_mm.datasets.TinyFaceDataset` sets it). Keys
    are ``{dataset_name}/adaface/rank{k}`` in percent. Only the embedding branch is
    scored: QAConv against TinyFace's 158k-image gallery would be ~6e8 map pairs.
    Embeddings are gathered to rank 0 (mmengine's ``BaseMetric``): 4 x D bytes per
    image, ~330 MB for the full set at D = 512.

    Example::

        test_evaluator = dict(type='TinyFaceMetric', ranks=(1, 5, 20))

    Args:
        dataset_name (str): First part of every key. Defaults to 'tinyface'.
        ranks (Sequence[int]): Ranks to report. Defaults to (1, 5, 20).
        collect_device (str): mmengine's gathering device. Defaults to 'cpu'.

    Raises:
        ConfigError: A rank below 1.
        DataFormatError: No probe or no gallery image reached the metric.
    """

    default_prefix: Optional[str] = None

    def __init__(self, dataset_name: str = 'tinyface',
                 ranks: Sequence[int] = (1, 5, 20),
                 collect_device: str = 'cpu') -> None:
        super().__init__(collect_device=collect_device)
        if not ranks or min(ranks) < 1:
            raise ConfigError(f'TinyFaceMetric: ranks must be >= 1, got {ranks}')
        self.dataset_name = dataset_name
        self.ranks = tuple(int(k) for k in ranks)

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        for s in data_samples:
            s = s if isinstance(s, dict) else s.to_dict()
            emb = np.asarray(s['embedding'].float().cpu() if hasattr(
                s['embedding'], 'cpu') else s['embedding'], np.float32)
            self.results.append((s['key'], emb.reshape(-1)))

    def compute_metrics(self, results: List) -> Dict[str, float]:
        roles, subjects, feats = [], [], []
        for key, emb in results:
            role, subject = tinyface_role_subject(key)
            roles.append(role)
            subjects.append(subject)
            feats.append(emb)
        roles = np.asarray(roles)
        subjects = np.asarray(subjects)
        feats = np.stack(feats)
        feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        probe = roles == 'Probe'
        gallery = ~probe
        if not probe.any() or not gallery.any():
            raise DataFormatError(
                self.dataset_name, f'{int(probe.sum())} probe and '
                f'{int(gallery.sum())} gallery images reached the metric; '
                'TinyFace needs both')
        scores = feats[probe] @ feats[gallery].T
        res = identification_1n(scores, subjects[probe], subjects[gallery],
                                ranks=self.ranks, fpirs=())
        out = {f'{self.dataset_name}/adaface/rank{k}': 100.0 * res[f'rank{k}']
               for k in self.ranks}
        out[f'{self.dataset_name}/num_probes'] = float(probe.sum())
        out[f'{self.dataset_name}/num_gallery'] = float(gallery.sum())
        return out
