import os.path as osp
import tempfile
import unittest

import numpy as np
import torch

from oaml_mm.errors import ConfigError, DataFormatError
from oaml_mm.evaluation.functional import (POOL_SUFFIX, TemplateAccumulator,
                                           apply_visibility_fusion,
                                           identification_1n, pool_templates,
                                           tar_at_far)
from oaml_mm.evaluation.metrics import IJBMetric
from oaml_mm.models.functional import calibrate_visibility
from ..fakes import FakeMatcherModel, feed, toy_pair_score, write_ijb
from .test_verification_metric import FUSION_PARAMS, LEGACY_FUSION


class TestIJBMetric(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def _metric(self, **kw):
        kw.setdefault('gallery_files', ('meta/g1.csv', 'meta/g2.csv'))
        kw.setdefault('probe_file', 'meta/probe.csv')
        return IJBMetric('ijbc', data_root=self.root, subset='IJBC',
                         fars=(0.2, 0.5), progress=False, **kw)

    def test_cosine_branch_hand_pooled(self):
        samples = write_ijb(self.root)
        m = self._metric(branches=('adaface', ))
        feed(m, samples)
        r = m.evaluate(len(samples))
        feats = np.stack([(s['embedding'] * s['norm']).numpy() for s in samples])
        t, pooled = pool_templates(feats, [s['template_id'] for s in samples],
                                   [s['media_id'] for s in samples])
        self.assertEqual(t.tolist(), [1, 2, 3, 4, 5])
        pairs = [(1, 2), (1, 3), (2, 3), (3, 4), (4, 5), (2, 4), (1, 5), (3, 5)]
        cos = np.array([pooled[a - 1] @ pooled[b - 1] for a, b in pairs])
        np.testing.assert_allclose(m.scores['adaface'], cos, atol=1e-6)
        labels = np.array([1, 0, 0, 0, 0, 0, 0, 1], bool)
        ref = tar_at_far(cos, labels, (0.2, 0.5))
        self.assertAlmostEqual(r['ijbc/adaface/TAR@FAR=2e-01'], 100 * ref[0.2])
        self.assertAlmostEqual(r['ijbc/adaface/TAR@FAR=5e-01'], 100 * ref[0.5])
        # 1:N: probes 2 (subject 10, mate = template 1 in G1) and 5 (non-mated)
        sim = pooled @ pooled.T
        closed = identification_1n(sim[[1, 4]][:, [0, 2, 3]], [10, 40],
                                   [10, 20, 30], ranks=(1, 5, 10))
        self.assertAlmostEqual(r['ijbc/adaface/1N_rank1'], 100 * closed['rank1'])
        self.assertIn('ijbc/adaface/1N_TPIR@FPIR=1e-01', r)

    def test_probes_that_are_gallery_templates_refused(self):
        # Probe template 3 is also in G1: it found itself at rank 1 and the
        # 1:N figures read 100 % silently.
        samples = write_ijb(self.root)
        with open(osp.join(self.root, 'meta', 'probe.csv'), 'w') as f:
            f.write('TEMPLATE_ID,SUBJECT_ID\n2,10\n3,20\n5,40\n')
        m = self._metric(branches=('adaface', ))
        with self.assertRaisesRegex(
                DataFormatError, r"probe.csv, field 'TEMPLATE_ID': 1 of its 3 "
                r'probe templates are also gallery templates of .*g1.csv '
                r'\(first: 3\): each would find itself at rank 1'):
            feed(m, samples)
            m.evaluate(len(samples))

    def test_header_only_probe_list_refused(self):
        samples = write_ijb(self.root)
        with open(osp.join(self.root, 'meta', 'probe.csv'), 'w') as f:
            f.write('TEMPLATE_ID,SUBJECT_ID,FILENAME\n')
        m = self._metric(branches=('adaface', ))
        with self.assertRaisesRegex(DataFormatError,
                                    'probe.csv: no template rows after the '
                                    'header'):
            feed(m, samples)
            m.evaluate(len(samples))

    def test_qaconv_and_fused_on_pooled_maps(self):
        samples = write_ijb(self.root)
        m = self._metric()
        m.bind_model(FakeMatcherModel())
        feed(m, samples, batch=5)
        r = m.evaluate(len(samples))
        acc = TemplateAccumulator(5, map_shape=(4, 2, 2))
        media = {}
        for s in samples:
            media[(s['template_id'], s['media_id'])] = media.get(
                (s['template_id'], s['media_id']), 0) + 1
        for s in samples:
            acc.add(torch.tensor([s['template_id'] - 1]),
                    maps=s['feature_map'][None], visibility=s['visibility'][None],
                    weights=torch.tensor(
                        [1.0 / media[(s['template_id'], s['media_id'])]]))
        a = torch.tensor([0, 0, 1, 2, 3, 1, 0, 2])
        b = torch.tensor([1, 2, 2, 3, 4, 3, 4, 4])
        maps, vis = acc.maps().float(), acc.visibility()
        ref = toy_pair_score(maps[a], maps[b], vis[a], vis[b]).numpy()
        # fp16 storage: batched and one-by-one running means round differently
        np.testing.assert_allclose(m.scores['qaconv'], ref, atol=5e-4)
        for b_ in ('adaface', 'qaconv', 'fused'):
            self.assertIn(f'ijbc/{b_}/TAR@FAR=2e-01', r)
            self.assertIn(f'ijbc/{b_}/1N_rank1', r)

    def test_pair_template_without_images(self):
        samples = write_ijb(self.root, drop_template=4)
        m = self._metric()
        with self.assertRaises(DataFormatError) as cm:
            feed(m, samples)
        msg = str(cm.exception)
        self.assertIn('ijbc_template_pair_label.txt', msg)
        self.assertIn('line 4', msg)  # "3 4 0" is the fourth line
        self.assertIn('template 4', msg)

    def test_image_missing_at_runtime(self):
        samples = write_ijb(self.root)
        m = self._metric(branches=('adaface', ))
        feed(m, [s for s in samples if s['template_id'] != 5])
        with self.assertRaisesRegex(DataFormatError, 'line 5.*template 5'):
            m.evaluate(len(samples))

    def test_bad_csv_line(self):
        write_ijb(self.root)
        with open(osp.join(self.root, 'meta', 'g2.csv'), 'a') as f:
            f.write('x,30,q.jpg\n')
        with self.assertRaisesRegex(DataFormatError, 'g2.csv, record line 3'):
            self._metric()._load_meta()

    def test_missing_1n_files_only_skip_1n(self):
        samples = write_ijb(self.root, with_1n=False)
        m = self._metric(branches=('adaface', ))
        feed(m, samples)
        r = m.evaluate(len(samples))
        self.assertIn('ijbc/adaface/AUC', r)
        self.assertFalse(any('1N' in k for k in r))

    def test_fused_vis_on_template_visibility(self):
        samples = write_ijb(self.root)
        m = self._metric()
        m.bind_model(FakeMatcherModel())
        feed(m, samples)
        r = m.evaluate(len(samples))
        self.assertFalse([k for k in r if '/fused_vis/' in k])
        # Template visibility: its pooled map's mean (images weighted 1 / the
        # size of their media, as the maps are).
        acc = TemplateAccumulator(5, map_shape=(4, 2, 2))
        for s in samples:
            n = sum(1 for o in samples if (o['template_id'], o['media_id']) ==
                    (s['template_id'], s['media_id']))
            acc.add(torch.tensor([s['template_id'] - 1]), None,
                    s['feature_map'][None], s['visibility'][None],
                    torch.tensor([1.0 / n], dtype=torch.float64))
        tv = acc.visibility().flatten(1).mean(1).double().numpy()
        a = np.array([1, 1, 2, 3, 4, 2, 1, 3]) - 1
        b = np.array([2, 3, 3, 4, 5, 4, 5, 5]) - 1
        np.testing.assert_allclose(m.pair_visibility,
                                   np.stack([tv[a], tv[b]], 1), rtol=1e-5)
        m2 = self._metric(fusion_params=FUSION_PARAMS)
        m2.bind_model(FakeMatcherModel())
        feed(m2, samples)
        r2 = m2.evaluate(len(samples))
        ref = apply_visibility_fusion(FUSION_PARAMS, m.scores['adaface'],
                                      m.scores['qaconv'],
                                      m.pair_visibility[:, 0],
                                      m.pair_visibility[:, 1])
        np.testing.assert_allclose(m2.scores['fused_vis'], ref, rtol=1e-12)
        tar = tar_at_far(ref, m.labels, (0.2, 0.5))
        self.assertAlmostEqual(r2['ijbc/fused_vis/TAR@FAR=2e-01'],
                               100 * tar[0.2])
        self.assertIn('ijbc/fused_vis/AUC', r2)
        self.assertIn('ijbc/fused_vis/EER', r2)
        self.assertEqual({k: v for k, v in r2.items() if '/fused_vis/' not in k},
                         r)


class TestIJBMetricPooling(unittest.TestCase):
    """``pooling``: 'mean' (default), 'visibility' or both in one pass."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name
        self.samples = write_ijb(self.root)

    def tearDown(self):
        self.tmp.cleanup()

    def _run(self, **kw):
        m = IJBMetric('ijbc', data_root=self.root, subset='IJBC',
                      fars=(0.2, 0.5), progress=False,
                      gallery_files=('meta/g1.csv', 'meta/g2.csv'),
                      probe_file='meta/probe.csv', **kw)
        m.bind_model(FakeMatcherModel())
        feed(m, self.samples, batch=4)
        return m, m.evaluate(len(self.samples))

    def test_both_rules_in_one_pass_equal_separate_runs(self):
        m, both = self._run(pooling=('mean', 'visibility'))
        _, mean = self._run()
        _, vis = self._run(pooling='visibility')
        # The visibility rule's keys carry the suffix, alone or not.
        self.assertTrue(all('_vispool/' in k for k in vis))
        self.assertEqual(set(both), set(mean) | set(vis))
        self.assertIn('ijbc/fused_vispool/TAR@FAR=2e-01', both)
        self.assertIn('ijbc/qaconv_vispool/1N_rank1', both)
        for k, v in list(mean.items()) + list(vis.items()):
            self.assertEqual(both[k], v, k)
        self.assertEqual(set(m.scores), {'adaface', 'qaconv', 'fused',
                                         'adaface_vispool', 'qaconv_vispool',
                                         'fused_vispool'})
        self.assertEqual(set(m.roc_curves), set(m.scores))
        # The fake images have random visibility: the rules do differ.
        self.assertFalse(np.array_equal(m.scores['qaconv'],
                                        m.scores['qaconv_vispool']))

    def test_visibility_rule_weights_embeddings_hand_pooled(self):
        # Only the cosine branch: the visibility still weights the embeddings.
        m, r = self._run(branches=('adaface', ), pooling='visibility')
        vbar = np.array([max(float(s['visibility'].mean()), 1e-4)
                         for s in self.samples])
        feats = np.stack([(s['embedding'] * s['norm']).numpy()
                          for s in self.samples]) * vbar[:, None]
        t, pooled = pool_templates(feats,
                                   [s['template_id'] for s in self.samples],
                                   [s['media_id'] for s in self.samples])
        pairs = [(1, 2), (1, 3), (2, 3), (3, 4), (4, 5), (2, 4), (1, 5), (3, 5)]
        cos = np.array([pooled[a - 1] @ pooled[b - 1] for a, b in pairs])
        np.testing.assert_allclose(m.scores['adaface_vispool'], cos,
                                   atol=1e-6)
        self.assertEqual(set(m.scores), {'adaface_vispool'})
        self.assertIn('ijbc/adaface_vispool/AUC', r)
        self.assertFalse(any(k.startswith('ijbc/adaface/') for k in r))

    def test_bad_option(self):
        for bad in ('max', (), ('mean', 'mean'), ('mean', 'vis')):
            with self.assertRaisesRegex(ConfigError, 'pooling'):
                IJBMetric('ijbc', data_root=self.root, pooling=bad)


class _CalibratingModel(FakeMatcherModel):
    """Calibrates visibility by (0.3, 0.7) before matching, as QAConvHead does,
    unless told the maps are calibrated already; records what it was told.
    ``pool_calibrated``: its templates pool the calibrated maps
    (``test_cfg.pool_vis='calibrated'``)."""
    vis_range = (0.3, 0.7)

    def __init__(self, pool_calibrated=True):
        super().__init__()
        self.told = []
        self.pool_vis_range = self.vis_range if pool_calibrated else None

    def match_pairs(self, a, b, va=None, vb=None, calibrated=False):
        self.told.append(calibrated)
        if not calibrated:
            va, vb = (calibrate_visibility(v, self.vis_range) for v in (va, vb))
        return super().match_pairs(a, b, va, vb)

    def match(self, p, g, pv=None, gv=None, calibrated=False):
        self.told.append(calibrated)
        if not calibrated:
            pv, gv = (calibrate_visibility(v, self.vis_range) for v in (pv, gv))
        return super().match(p, g, pv, gv)


class TestIJBMetricCalibratedPooling(unittest.TestCase):
    """Templates pool the raw maps (default) or, with ``pool_vis='calibrated'``,
    the calibrated ones; the fusion reads the map it was fitted on."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name
        self.samples = write_ijb(self.root)

    def tearDown(self):
        self.tmp.cleanup()

    def _pool(self, pooling, calibrate):
        acc = TemplateAccumulator(5, map_shape=(4, 2, 2), exact=True,
                                  pooling=pooling)
        for s in self.samples:
            n = sum(1 for o in self.samples if (o['template_id'], o['media_id'])
                    == (s['template_id'], s['media_id']))
            v = s['visibility'][None]
            acc.add(torch.tensor([s['template_id'] - 1]), None,
                    s['feature_map'][None],
                    calibrate_visibility(v, (0.3, 0.7)) if calibrate else v,
                    torch.tensor([1.0 / n], dtype=torch.float64))
        return acc

    def _run(self, pooling, pool_calibrated=True, **kw):
        m = IJBMetric('ijbc', data_root=self.root, fars=(0.2, 0.5),
                      progress=False, pooling=pooling,
                      gallery_files=('meta/g1.csv', 'meta/g2.csv'),
                      probe_file='meta/probe.csv', **kw)
        model = _CalibratingModel(pool_calibrated)
        m.bind_model(model)
        feed(m, self.samples)
        m.evaluate(len(self.samples))
        return m, model

    def test_templates_pool_the_calibrated_map(self):
        a = torch.tensor([0, 0, 1, 2, 3, 1, 0, 2])
        b = torch.tensor([1, 2, 2, 3, 4, 3, 4, 4])
        for pooling in ('mean', 'visibility'):
            sfx = POOL_SUFFIX[pooling]
            with self.subTest(pooling=pooling):
                m, model = self._run(pooling)
                # Every QAConv call (listed pairs and 1:N) is told the pooled
                # maps are calibrated: they are not stretched twice.
                self.assertTrue(model.told and all(model.told))
                acc = self._pool(pooling, calibrate=True)
                maps, vis = acc.maps().float(), acc.visibility()
                ref = toy_pair_score(maps[a], maps[b], vis[a], vis[b])
                np.testing.assert_allclose(m.scores['qaconv' + sfx], ref.numpy(),
                                           atol=1e-5)
                # The raw maps pooled, then calibrated (before): other scores.
                old = self._pool(pooling, calibrate=False)
                ov = calibrate_visibility(old.visibility(), (0.3, 0.7))
                om = old.maps().float()
                before = toy_pair_score(om[a], om[b], ov[a], ov[b]).numpy()
                self.assertGreater(np.abs(before - ref.numpy()).max(), 1e-3)
                # The fusion's visibility is that map's mean, and says so.
                tv = vis.flatten(1).mean(1).double().numpy()
                self.assertEqual(m.pair_visibility_range, (0.3, 0.7))
                np.testing.assert_allclose(
                    m.pair_visibility, np.stack([tv[a], tv[b]], 1), rtol=1e-6)

    def test_legacy_fusion_reads_the_raw_pooled_map(self):
        a = np.array([0, 0, 1, 2, 3, 1, 0, 2])
        b = np.array([1, 2, 2, 3, 4, 3, 4, 4])
        for pooling in ('mean', 'visibility'):
            sfx = POOL_SUFFIX[pooling]
            with self.subTest(pooling=pooling):
                m, _ = self._run(pooling, fusion_params=LEGACY_FUSION)
                # The template visibility the code before fed the fusion: the
                # raw maps pooled by the same rule.
                raw = self._pool(pooling, calibrate=False).visibility()
                tv = raw.flatten(1).double().mean(1).numpy()
                ref = apply_visibility_fusion(
                    LEGACY_FUSION, m.scores['adaface' + sfx], m.scores['qaconv' + sfx],
                    tv[a], tv[b])
                np.testing.assert_allclose(m.scores['fused_vis' + sfx], ref,
                                           rtol=1e-9)
                cal = dict(LEGACY_FUSION, vis_range=[0.3, 0.7])
                m2, _ = self._run(pooling, fusion_params=cal)
                ref2 = apply_visibility_fusion(
                    cal, m.scores['adaface' + sfx], m.scores['qaconv' + sfx],
                    m.pair_visibility[:, 0], m.pair_visibility[:, 1])
                np.testing.assert_allclose(m2.scores['fused_vis' + sfx], ref2,
                                           rtol=1e-6)
                self.assertGreater(np.abs(ref2 - ref).max(), 1e-3)

    def test_raw_pooling_is_the_default_and_scores_as_before(self):
        a = torch.tensor([0, 0, 1, 2, 3, 1, 0, 2])
        b = torch.tensor([1, 2, 2, 3, 4, 3, 4, 4])
        cal = dict(LEGACY_FUSION, vis_range=[0.3, 0.7])
        for pooling in ('mean', 'visibility'):
            sfx = POOL_SUFFIX[pooling]
            with self.subTest(pooling=pooling):
                m, model = self._run(pooling, pool_calibrated=False,
                                     fusion_params=cal)
                # The raw maps pooled; the matcher calibrates the pooled map.
                self.assertTrue(model.told and not any(model.told))
                raw = self._pool(pooling, calibrate=False)
                rv = calibrate_visibility(raw.visibility(), (0.3, 0.7))
                rm = raw.maps().float()
                ref = toy_pair_score(rm[a], rm[b], rv[a], rv[b]).numpy()
                np.testing.assert_allclose(m.scores['qaconv' + sfx], ref,
                                           atol=1e-5)
                # The fusion reads that same map: the pooled map calibrated.
                tv = rv.flatten(1).double().mean(1).numpy()
                np.testing.assert_allclose(
                    m.pair_visibility, np.stack([tv[a], tv[b]], 1), rtol=1e-6)
                ref2 = apply_visibility_fusion(
                    cal, m.scores['adaface' + sfx], m.scores['qaconv' + sfx],
                    tv[a], tv[b])
                np.testing.assert_allclose(m.scores['fused_vis' + sfx], ref2,
                                           rtol=1e-6)
