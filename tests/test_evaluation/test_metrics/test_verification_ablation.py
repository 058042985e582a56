"""VerificationMetric: select_by_name (a shared ConcatDataset) and the ablation."""
import unittest

import numpy as np
import torch

from oaml_mm.errors import DataFormatError
from oaml_mm.evaluation.functional import (verification_10fold_scores,
                                           visibility_mae)
from oaml_mm.evaluation.metrics import VerificationMetric
from ..fakes import FakeMatcherModel, toy_pair_score, verification_samples


def _with_truth(samples, seed=1):
    g = torch.Generator().manual_seed(seed)
    types = ['none', 'niqab', 'hand']
    for i, s in enumerate(samples):
        s['gt_visibility'] = (torch.rand(1, 2, 2, generator=g) > 0.5).float()
        s['occlusion_type'] = types[i % 3]
        s['dataset_name'] = 'occluded'
    return samples


class TestVisibilityMAE(unittest.TestCase):

    def test_hand_computed(self):
        pred = np.array([[0.5, 0.5], [1.0, 0.0], [0.0, 0.0]])
        true = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
        out = visibility_mae(pred, true, ['niqab', 'hand', 'niqab'])
        self.assertAlmostEqual(out['all'], (0.5 + 0.5 + 0.0) / 3)
        self.assertAlmostEqual(out['niqab'], 0.25)
        self.assertAlmostEqual(out['hand'], 0.5)


class TestAblation(unittest.TestCase):

    def _run(self, samples, **kw):
        m = VerificationMetric('occluded', progress=False,
                               visibility_ablation=True, **kw)
        m.bind_model(FakeMatcherModel())
        m.process({}, samples)
        return m.evaluate(len(samples))

    def test_keys_and_values(self):
        samples = _with_truth(verification_samples(num_pairs=20))
        out = self._run(samples)
        issame = np.array([samples[2 * i]['issame'] for i in range(20)])
        maps = torch.stack([s['feature_map'].float() for s in samples])
        gt = torch.stack([s['gt_visibility'] for s in samples])
        pred = torch.stack([s['visibility'] for s in samples])
        for key, vis in (('qaconv_gt_vis', gt), ('qaconv_no_vis', None),
                         ('qaconv', pred)):
            va = None if vis is None else vis[0::2]
            vb = None if vis is None else vis[1::2]
            q = toy_pair_score(maps[0::2], maps[1::2], va, vb).numpy()
            ref = verification_10fold_scores(q.astype(np.float64), issame)
            self.assertAlmostEqual(out[f'occluded/{key}/accuracy'],
                                   100 * ref['accuracy'], places=3, msg=key)
        types = [s['occlusion_type'] for s in samples]
        # The metric stores predicted visibility with the maps (fp16 storage).
        mae = visibility_mae(pred.half().float().numpy(), gt.numpy(), types)
        self.assertAlmostEqual(out['occluded/visibility/MAE'], mae['all'],
                               places=3)
        for t in ('none', 'niqab', 'hand'):
            self.assertAlmostEqual(out[f'occluded/visibility/MAE_{t}'], mae[t],
                                   places=3)
        # The true visibility gives another score than none: the store is used.
        self.assertNotEqual(out['occluded/qaconv_gt_vis/threshold_qaconv'],
                            out['occluded/qaconv_no_vis/threshold_qaconv'])

    def test_types_are_the_datas_own(self):
        # A type no code lists gets its own key (it used to count as 'other').
        samples = _with_truth(verification_samples(num_pairs=20))
        for s in samples[::3]:
            s['occlusion_type'] = 'visor'
        out = self._run(samples)
        types = [s['occlusion_type'] for s in samples]
        pred = torch.stack([s['visibility'] for s in samples]).half().float()
        gt = torch.stack([s['gt_visibility'] for s in samples])
        mae = visibility_mae(pred.numpy(), gt.numpy(), types)
        self.assertAlmostEqual(out['occluded/visibility/MAE_visor'],
                               mae['visor'], places=3)
        self.assertNotIn('occluded/visibility/MAE_other', out)
        self.assertEqual(
            sorted(k.rsplit('_', 1)[-1] for k in out
                   if k.startswith('occluded/visibility/MAE_')),
            sorted(set(types)))

    def test_finer_maps_than_true_masks(self):
        # Maps and predicted visibility on 4x4 (backbone map_stage=3), true masks
        # on 2x2 (the side files' grid).
        g = torch.Generator().manual_seed(5)
        samples = _with_truth(verification_samples(num_pairs=20))
        for s in samples:
            s['feature_map'] = torch.nn.functional.normalize(
                torch.randn(4, 4, 4, generator=g), dim=0).half()
            s['visibility'] = torch.rand(1, 4, 4, generator=g)
        out = self._run(samples)
        issame = np.array([samples[2 * i]['issame'] for i in range(20)])
        maps = torch.stack([s['feature_map'].float() for s in samples])
        gt = torch.stack([s['gt_visibility'] for s in samples])
        up = gt.repeat_interleave(2, 2).repeat_interleave(2, 3)
        q = toy_pair_score(maps[0::2], maps[1::2], up[0::2], up[1::2]).numpy()
        ref = verification_10fold_scores(q.astype(np.float64), issame)
        self.assertAlmostEqual(out['occluded/qaconv_gt_vis/accuracy'],
                               100 * ref['accuracy'], places=3)
        pred = torch.stack([s['visibility'] for s in samples]).half().float()
        pooled = torch.nn.functional.avg_pool2d(pred, 2)
        types = [s['occlusion_type'] for s in samples]
        mae = visibility_mae(pooled.numpy(), gt.numpy(), types)
        self.assertAlmostEqual(out['occluded/visibility/MAE'], mae['all'],
                               places=3)

    def test_missing_truth_is_an_error(self):
        samples = verification_samples(num_pairs=10)
        with self.assertRaisesRegex(DataFormatError, 'side_files=True'):
            self._run(samples)

    def test_off_by_default(self):
        samples = _with_truth(verification_samples(num_pairs=10))
        m = VerificationMetric('occluded', progress=False)
        m.bind_model(FakeMatcherModel())
        m.process({}, samples)
        out = m.evaluate(len(samples))
        self.assertFalse(any('gt_vis' in k or 'visibility/' in k for k in out))


class TestSelectByName(unittest.TestCase):

    def test_keeps_only_its_set(self):
        mine = verification_samples(num_pairs=10, seed=0, wrong=())
        other = verification_samples(num_pairs=10, seed=3, wrong=range(10))
        for s in mine:
            s['dataset_name'] = 'clean'
        for s in other:
            s['dataset_name'] = 'masked'
        mixed = [x for pair in zip(mine, other) for x in pair]
        m = VerificationMetric('clean', branches=('adaface', ),
                               select_by_name=True, progress=False)
        m.process({}, mixed)
        out = m.evaluate(len(mixed))
        # The other set's labels are all flipped: mixing it in would break 100%.
        self.assertEqual(out['clean/adaface/accuracy'], 100.0)
        m = VerificationMetric('clean', branches=('adaface', ), progress=False)
        m.process({}, mine + other[:0])
        self.assertEqual(m.evaluate(len(mine))['clean/adaface/accuracy'], 100.0)


if __name__ == '__main__':
    unittest.main()
