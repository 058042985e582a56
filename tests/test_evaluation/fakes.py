"""Fake predictions, meta files and a fake matcher model for the metric tests."""
import os
import os.path as osp

import torch
import torch.nn as nn
import torch.nn.functional as F

from oaml_mm.models.functional import resize_visibility


def toy_pair_score(a, b, va=None, vb=None):
    """Row-wise visibility-weighted correlation sum (stands in for QAConv)."""
    va = torch.ones_like(a[:, :1]) if va is None else va
    vb = torch.ones_like(b[:, :1]) if vb is None else vb
    return (a * va * b * vb).flatten(1).sum(1)


class FakeMatcherModel(nn.Module):
    """Has what the metrics use: parameters (device), match_pairs, match."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.qaconv_head = nn.Identity()

    def match_pairs(self, a, b, va=None, vb=None):
        # Like QAConvHead: visibility on another grid is brought onto the maps'.
        va, vb = (resize_visibility(v, a.shape[-1]) for v in (va, vb))
        return toy_pair_score(a, b, va, vb)

    def match(self, p, g, pv=None, gv=None):
        pv = torch.ones_like(p[:, :1]) if pv is None else pv
        gv = torch.ones_like(g[:, :1]) if gv is None else gv
        return (p * pv).flatten(1) @ (g * gv).flatten(1).T


def verification_samples(num_pairs=20, dim=8, seed=0, wrong=(1, )):
    """Pairs of unit embeddings: 'same' pairs identical, others opposite.

    Pairs listed in ``wrong`` get the opposite label (errors the protocol must see).
    """
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(num_pairs):
        same = i % 2 == 0
        a = F.normalize(torch.randn(dim, generator=g), dim=0)
        # different pairs are opposite (distance 4, beyond every threshold)
        b = a.clone() if same else -a
        label = (not same) if i in wrong else same
        for slot, e in enumerate((a, b)):
            fmap = F.normalize(torch.randn(4, 2, 2, generator=g), dim=0)
            samples.append(
                dict(pair_index=i, pair_slot=slot, issame=label, embedding=e,
                     norm=torch.tensor([1.0]), feature_map=fmap.half(),
                     visibility=torch.rand(1, 2, 2, generator=g)))
    return samples


def write_ijb(root, with_1n=True, pairs=None, drop_template=None):
    """A 5-template IJB layout; returns the per-image samples the model would give.

    Templates 1, 2 (subject 10), 3 (subject 20), 4 (subject 30), 5 (subject 40);
    template 1 has two media (2 + 1 images).
    """
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    g = torch.Generator().manual_seed(3)
    images = [(1, 100), (1, 100), (1, 101), (2, 102), (3, 103), (3, 104),
              (4, 105), (5, 106)]
    samples = []
    with open(osp.join(root, 'meta', 'ijbc_face_tid_mid.txt'), 'w') as f:
        for k, (t, m) in enumerate(images):
            if t == drop_template:
                continue
            f.write(f'{k}.jpg {t} {m}\n')
            samples.append(dict(
                img_path=f'{k}.jpg', template_id=t, media_id=m,
                embedding=F.normalize(torch.randn(6, generator=g), dim=0),
                norm=torch.rand(1, generator=g) + 0.5,
                feature_map=F.normalize(torch.randn(4, 2, 2, generator=g),
                                        dim=0).half(),
                visibility=torch.rand(1, 2, 2, generator=g)))
    pairs = pairs or [(1, 2, 1), (1, 3, 0), (2, 3, 0), (3, 4, 0), (4, 5, 0),
                      (2, 4, 0), (1, 5, 0), (3, 5, 1)]
    with open(osp.join(root, 'meta', 'ijbc_template_pair_label.txt'), 'w') as f:
        for a, b, y in pairs:
            f.write(f'{a} {b} {y}\n')
    if with_1n:
        with open(osp.join(root, 'meta', 'g1.csv'), 'w') as f:
            f.write('TEMPLATE_ID,SUBJECT_ID,FILENAME\n1,10,a.jpg\n1,10,b.jpg\n'
                    '3,20,c.jpg\n')
        with open(osp.join(root, 'meta', 'g2.csv'), 'w') as f:
            f.write('TEMPLATE_ID,SUBJECT_ID,FILENAME\n4,30,d.jpg\n')
        with open(osp.join(root, 'meta', 'probe.csv'), 'w') as f:
            f.write('TEMPLATE_ID,SUBJECT_ID,FILENAME\n2,10,e.jpg\n5,40,f.jpg\n')
    return samples


def feed(metric, samples, batch=3):
    for s in range(0, len(samples), batch):
        metric.process({}, samples[s:s + batch])
