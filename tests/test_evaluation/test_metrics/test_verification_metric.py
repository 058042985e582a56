import unittest

import numpy as np
import torch

from oaml_mm.errors import ConfigError, DataFormatError
from oaml_mm.evaluation.functional import (VIS_FUSION_FEATURES,
                                           apply_visibility_fusion,
                                           fuse_scores, impostor_stats,
                                           verification_10fold,
                                           verification_10fold_scores)
from oaml_mm.evaluation.metrics import VerificationMetric
from oaml_mm.registry import METRICS, MODELS
from ..fakes import (FakeMatcherModel, feed, toy_pair_score,
                     verification_samples)

#: A hand-set visibility fusion (what fit_visibility_fusion stores).
FUSION_PARAMS = dict(version=1, features=list(VIS_FUSION_FEATURES),
                     z_stats={'adaface': [0.1, 0.5], 'qaconv': [0.2, 0.3]},
                     coef=[1.0, 0.5, 0.2, -0.1, 2.0, -0.5], intercept=-0.3,
                     C=1.0, num_pairs=100, source='calib')


#: A visibility fusion as a calibration stored it before fusions recorded the
#: map they were fitted on (tools/calibrate.py on the SynthFace demo's OAML
#: model, seed 1, copied from its checkpoint's meta): no ``vis_range``, fitted
#: on the raw predicted map.
LEGACY_FUSION = {
    'version': 1, 'features': list(VIS_FUSION_FEATURES),
    'z_stats': {'adaface': [0.009811657381554444, 0.356237681355679],
                'qaconv': [-2.8292375652560344, 1.555620400948708]},
    'coef': [-0.2829642344053565, -0.09094050998356261, -3.73494353942986,
             1.322156382399423, 1.1325970215391274, 2.237932154814628],
    'intercept': -0.4490766322948834, 'C': 1.0, 'num_pairs': 3000,
    'source': 'calib'}
#: Its fused_vis scores of ``verification_samples(12, wrong=(1, 4, 7))``
#: with a model calibrating by (0.3, 0.7), as the code before computed them.
LEGACY_FUSED_VIS = [
    -0.0893121272, -0.6754275839, 0.5269079358, -0.1670853356, 0.3639395753,
    -0.4999227189, 0.8058943208, -0.0969490917, 0.4538827365, 0.022242098,
    1.8100750308, -0.2800698828]


class _CalibratedModel(FakeMatcherModel):
    """A matcher whose model calibrates its maps by (0.3, 0.7)."""
    vis_range = (0.3, 0.7)


class TestVerificationMetric(unittest.TestCase):

    def test_adaface_hand_computed(self):
        # 20 pairs, 10 folds of 2: same pairs at distance 0, different pairs far;
        # pair 1 is mislabelled, so its fold scores 1/2: mean 95 %, std 15 %.
        m = VerificationMetric('lfw', branches=('adaface', ), progress=False)
        feed(m, verification_samples())
        r = m.evaluate(40)
        self.assertAlmostEqual(r['lfw/adaface/accuracy'], 95.0)
        self.assertAlmostEqual(r['lfw/adaface/std'], 15.0)
        self.assertIn('lfw/adaface/AUC', r)
        self.assertEqual(sorted(k.split('/')[1] for k in r), ['adaface'] * 5)

    def test_branches_match_functional(self):
        samples = verification_samples(num_pairs=30, wrong=(1, 4, 7))
        m = METRICS.build(dict(type='VerificationMetric', dataset_name='cfp_fp',
                               progress=False, fars=(0.1, )))
        m.bind_model(FakeMatcherModel())
        # shuffled arrival order and uneven batches must not matter
        order = np.random.RandomState(0).permutation(len(samples))
        feed(m, [samples[i] for i in order], batch=7)
        r = m.evaluate(len(samples))
        emb = torch.stack([s['embedding'] for s in samples]).numpy()
        issame = np.array([samples[2 * i]['issame'] for i in range(30)])
        ref = verification_10fold(emb, issame)
        self.assertAlmostEqual(r['cfp_fp/adaface/accuracy'],
                               100 * ref['accuracy'], places=9)
        maps = torch.stack([s['feature_map'] for s in samples]).float()
        vis = torch.stack([s['visibility'] for s in samples])
        q = toy_pair_score(maps[0::2], maps[1::2], vis[0::2], vis[1::2])
        q = q.double().numpy()
        np.testing.assert_allclose(m.scores['qaconv'], q, rtol=1e-3, atol=1e-3)
        refq = verification_10fold_scores(m.scores['qaconv'], issame)
        self.assertAlmostEqual(r['cfp_fp/qaconv/accuracy'],
                               100 * refq['accuracy'])
        cos = np.sum(emb[0::2] * emb[1::2], 1)
        fused = fuse_scores([cos, m.scores['qaconv']], (0.5, 0.5), [
            impostor_stats(cos, issame),
            impostor_stats(m.scores['qaconv'], issame)
        ])
        reff = verification_10fold_scores(fused, issame)
        self.assertAlmostEqual(r['cfp_fp/fused/accuracy'],
                               100 * reff['accuracy'])
        self.assertIn('cfp_fp/fused/TAR@FAR=1e-01', r)
        # Thresholds are named by their unit, never mixed under one name: the
        # cosine branch's squared-L2 threshold d is reported as 1 - d / 2.
        self.assertAlmostEqual(r['cfp_fp/adaface/threshold_cos'],
                               1 - ref['threshold'] / 2)
        self.assertEqual(r['cfp_fp/qaconv/threshold_qaconv'], refq['threshold'])
        self.assertEqual(r['cfp_fp/fused/threshold_fused'], reff['threshold'])
        self.assertFalse([k for k in r if k.endswith('/threshold')])
        self.assertEqual(set(m.roc_curves), {'adaface', 'qaconv', 'fused'})

    def test_keys_name_the_margin_head_in_use(self):
        # With an ArcFace head the global branch's keys say arcface; the adaface
        # keys stay as aliases with the same values (save_best, scripts).
        samples = verification_samples(num_pairs=30, wrong=(1, 4, 7))
        model = FakeMatcherModel()
        model.head = MODELS.build(dict(type='ArcFaceHead', in_channels=8,
                                       num_classes=3))
        m = VerificationMetric('lfw', fars=(0.1, ), progress=False)
        m.bind_model(model)
        feed(m, samples)
        r = m.evaluate(len(samples))
        ada = {k.split('/', 2)[2]: v for k, v in r.items()
               if k.startswith('lfw/adaface/')}
        arc = {k.split('/', 2)[2]: v for k, v in r.items()
               if k.startswith('lfw/arcface/')}
        self.assertIn('accuracy', arc)
        self.assertEqual(arc, ada)
        self.assertIn('lfw/qaconv/accuracy', r)
        self.assertFalse([k for k in r if k.startswith('lfw/arcface_')])
        # An AdaFace head (or none) keeps the keys as they were.
        model.head = MODELS.build(dict(type='AdaFaceHead', in_channels=8,
                                       num_classes=3))
        feed(m, samples)
        self.assertFalse([k for k in m.evaluate(len(samples)) if 'arcface' in k])

    def test_skips_qaconv_without_model(self):
        m = VerificationMetric('lfw', progress=False)
        feed(m, verification_samples())
        r = m.evaluate(40)
        self.assertFalse(any('/qaconv/' in k or '/fused/' in k for k in r))

    def test_missing_slot(self):
        m = VerificationMetric('agedb_30', branches=('adaface', ))
        feed(m, verification_samples()[:-1])
        with self.assertRaisesRegex(DataFormatError, 'pair 19 has no image '
                                    'in slot 1'):
            m.evaluate(39)

    def test_padding_repeats_are_ignored(self):
        samples = verification_samples()
        m = VerificationMetric('lfw', branches=('adaface', ), progress=False)
        m.set_dataset_size(len(samples))
        # DDP-style padding: the first samples come again after the last one;
        # pair 0 slot 0 is replaced by garbage to show it is not used.
        bad = dict(samples[0], embedding=-samples[0]['embedding'])
        feed(m, samples + [bad])
        self.assertAlmostEqual(m.evaluate(40)['lfw/adaface/accuracy'], 95.0)

    def test_state_is_reset(self):
        m = VerificationMetric('lfw', branches=('adaface', ), progress=False)
        feed(m, verification_samples())
        a = m.evaluate(40)
        feed(m, verification_samples())
        self.assertEqual(a, m.evaluate(40))

    def test_bad_config(self):
        with self.assertRaises(ConfigError):
            VerificationMetric('lfw', branches=('arcface', ))
        with self.assertRaises(ConfigError):
            VerificationMetric('lfw', fuse_weights=(1.0, ))

    def test_fused_vis_keys_with_fusion_params(self):
        samples = verification_samples(num_pairs=30, wrong=(1, 4, 7))
        m = VerificationMetric('calib', fars=(0.1, ), progress=False)
        m.bind_model(FakeMatcherModel())
        feed(m, samples)
        r = m.evaluate(len(samples))
        # No params: no fused_vis keys, but the pairs' visibility is kept.
        self.assertFalse([k for k in r if '/fused_vis/' in k])
        vis = torch.stack([s['visibility'] for s in samples]).flatten(1)
        vis = vis.mean(1).double().numpy()
        np.testing.assert_allclose(m.pair_visibility,
                                   np.stack([vis[0::2], vis[1::2]], 1),
                                   rtol=1e-6)
        m2 = VerificationMetric('calib', fars=(0.1, ), progress=False,
                                fusion_params=FUSION_PARAMS)
        m2.bind_model(FakeMatcherModel())
        feed(m2, samples)
        r2 = m2.evaluate(len(samples))
        ref = apply_visibility_fusion(FUSION_PARAMS, m.scores['adaface'],
                                      m.scores['qaconv'],
                                      m.pair_visibility[:, 0],
                                      m.pair_visibility[:, 1])
        np.testing.assert_allclose(m2.scores['fused_vis'], ref, rtol=1e-12)
        res = verification_10fold_scores(ref, m.labels)
        self.assertAlmostEqual(r2['calib/fused_vis/accuracy'],
                               100 * res['accuracy'])
        self.assertAlmostEqual(r2['calib/fused_vis/std'], 100 * res['std'])
        self.assertEqual(r2['calib/fused_vis/threshold_fused_vis'],
                         res['threshold'])
        for k in ('AUC', 'EER', 'TAR@FAR=1e-01'):
            self.assertIn(f'calib/fused_vis/{k}', r2)
        # The other keys are unchanged.
        self.assertEqual({k: v for k, v in r2.items() if '/fused_vis/' not in k},
                         r)
        # A checkpoint's params do not replace the ones given.
        m2.set_fusion_params(dict(FUSION_PARAMS, intercept=5.0),
                             from_checkpoint=True)
        self.assertEqual(m2.fusion_params, FUSION_PARAMS)
        m.set_fusion_params(FUSION_PARAMS, from_checkpoint=True)
        self.assertEqual(m.fusion_params, FUSION_PARAMS)

    def test_fused_vis_reads_the_calibrated_map(self):
        samples = verification_samples(num_pairs=12, wrong=(1, 4, 7))
        raw = torch.stack([s['visibility'] for s in samples]).double()
        cal = ((raw - 0.3) / 0.4).clamp(0, 1).flatten(1).mean(1).numpy()
        m = VerificationMetric('calib', progress=False)
        m.bind_model(_CalibratedModel())
        feed(m, samples)
        m.evaluate(len(samples))
        # The pairs' visibility (what a calibration fits on) is the mean of
        # the calibrated map, and says so.
        self.assertEqual(m.pair_visibility_range, (0.3, 0.7))
        np.testing.assert_allclose(m.pair_visibility,
                                   np.stack([cal[0::2], cal[1::2]], 1),
                                   rtol=1e-6)
        rm = raw.flatten(1).mean(1).numpy()
        self.assertGreater(np.abs(m.pair_visibility - np.stack(
            [rm[0::2], rm[1::2]], 1)).max(), 0.05)
        # Params fitted on it are applied to it.
        params = dict(FUSION_PARAMS, vis_range=[0.3, 0.7])
        m2 = VerificationMetric('calib', progress=False, fusion_params=params)
        m2.bind_model(_CalibratedModel())
        feed(m2, samples)
        m2.evaluate(len(samples))
        ref = apply_visibility_fusion(params, m.scores['adaface'],
                                      m.scores['qaconv'],
                                      m.pair_visibility[:, 0],
                                      m.pair_visibility[:, 1])
        np.testing.assert_allclose(m2.scores['fused_vis'], ref, rtol=1e-12)

    def test_stored_legacy_fusion_scores_as_before(self):
        # A checkpoint calibrated before the record: its fusion reads the raw
        # map, whatever the model's calibration, and scores as it did.
        samples = verification_samples(num_pairs=12, wrong=(1, 4, 7))
        m = VerificationMetric('calib', progress=False,
                               fusion_params=LEGACY_FUSION)
        m.bind_model(_CalibratedModel())
        feed(m, samples)
        m.evaluate(len(samples))
        np.testing.assert_allclose(m.scores['fused_vis'], LEGACY_FUSED_VIS,
                                   rtol=0, atol=1e-9)

    def test_bad_fusion_params(self):
        with self.assertRaisesRegex(ConfigError, "fusion_params.*'coef'"):
            VerificationMetric('lfw', fusion_params=dict(FUSION_PARAMS,
                                                         coef=[1.0]))
        m = VerificationMetric('lfw')
        with self.assertRaisesRegex(ConfigError, "'z_stats'"):
            m.set_fusion_params(dict(FUSION_PARAMS, z_stats={}))
