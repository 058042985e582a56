"""Non-finite embeddings and maps: every face metric reports NaN and a count."""
import logging
import math
import tempfile
import unittest
from unittest import mock

import numpy as np
import torch

from oaml_mm.evaluation.metrics import IJBMetric, VerificationMetric
from ..fakes import FakeMatcherModel, feed, verification_samples, write_ijb


def _nan_keys(r, prefix):
    return sorted(k for k, v in r.items() if k.startswith(prefix)
                  and not k.endswith(('nonfinite_features', 'nonfinite_scores'))
                  and math.isnan(v))


class TestVerificationNonFinite(unittest.TestCase):

    def _run(self, samples, **kw):
        m = VerificationMetric('lfw', progress=False, fars=(0.1, ), **kw)
        m.bind_model(FakeMatcherModel())
        feed(m, samples)
        return m, m.evaluate(len(samples))

    def test_all_nan_embeddings_report_nan_not_fifty(self):
        samples = verification_samples()
        for s in samples:
            s['embedding'] = torch.full_like(s['embedding'], float('nan'))
        m, r = self._run(samples, branches=('adaface', ))
        # Before: accuracy 50.0 and AUC 49-50, figures that look valid.
        for key in ('accuracy', 'std', 'threshold_cos', 'AUC', 'EER',
                    'TAR@FAR=1e-01'):
            self.assertTrue(math.isnan(r[f'lfw/adaface/{key}']), key)
        self.assertEqual(r['lfw/adaface/nonfinite_features'], 40.0)
        self.assertNotIn('adaface', m.roc_curves)
        self.assertTrue(np.isnan(m.scores['adaface']).all())

    def test_one_inf_embedding_masks_adaface_and_fused_only(self):
        samples = verification_samples()
        samples[5]['embedding'] = samples[5]['embedding'].clone()
        samples[5]['embedding'][0] = float('inf')
        with mock.patch('oaml_mm.evaluation.metrics.face_metric_base.'
                        'print_log') as log:
            _, r = self._run(samples)
        self.assertIn('1 with a non-finite embedding', log.call_args[0][0])
        self.assertEqual(log.call_args[1]['level'], logging.WARNING)
        self.assertEqual(r['lfw/adaface/nonfinite_features'], 1.0)
        self.assertEqual(r['lfw/fused/nonfinite_features'], 1.0)
        self.assertTrue(math.isnan(r['lfw/adaface/accuracy']))
        self.assertTrue(math.isnan(r['lfw/fused/accuracy']))
        # The QAConv branch reads only maps, all finite: a real figure.
        self.assertFalse(math.isnan(r['lfw/qaconv/accuracy']))
        self.assertNotIn('lfw/qaconv/nonfinite_features', r)
        self.assertEqual(_nan_keys(r, 'lfw/qaconv/'), [])

    def test_nan_feature_map_or_visibility_masks_qaconv_and_fused(self):
        for field in ('feature_map', 'visibility'):
            samples = verification_samples()
            for i in (2, 7):
                samples[i][field] = torch.full_like(samples[i][field],
                                                    float('nan'))
            _, r = self._run(samples)
            self.assertEqual(r['lfw/qaconv/nonfinite_features'], 2.0, field)
            self.assertEqual(r['lfw/fused/nonfinite_features'], 2.0, field)
            self.assertTrue(math.isnan(r['lfw/qaconv/AUC']), field)
            self.assertEqual(r['lfw/adaface/accuracy'], 95.0, field)

    def test_nonfinite_scores_from_finite_features(self):

        class NaNMatcher(FakeMatcherModel):

            def match_pairs(self, a, b, va=None, vb=None):
                out = super().match_pairs(a, b, va, vb)
                out[3] = float('nan')
                return out

        samples = verification_samples()
        m = VerificationMetric('lfw', progress=False)
        m.bind_model(NaNMatcher())
        feed(m, samples)
        r = m.evaluate(len(samples))
        self.assertEqual(r['lfw/qaconv/nonfinite_scores'], 1.0)
        self.assertEqual(r['lfw/fused/nonfinite_scores'], 1.0)
        self.assertTrue(math.isnan(r['lfw/fused/accuracy']))
        self.assertEqual(r['lfw/adaface/accuracy'], 95.0)

    def test_finite_inputs_add_no_keys(self):
        _, r = self._run(verification_samples())
        self.assertFalse([k for k in r if 'nonfinite' in k])
        self.assertFalse([k for k, v in r.items() if math.isnan(v)])


class TestIJBNonFinite(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def test_nan_embedding_masks_1to1_and_1toN(self):
        samples = write_ijb(self.root)
        # Image 3 is template 2's only image (the 1:N probe of subject 10).
        samples[3]['embedding'] = torch.full_like(samples[3]['embedding'],
                                                  float('nan'))
        m = IJBMetric('ijbc', data_root=self.root, subset='IJBC',
                      fars=(0.2, ), progress=False,
                      gallery_files=('meta/g1.csv', 'meta/g2.csv'),
                      probe_file='meta/probe.csv')
        m.bind_model(FakeMatcherModel())
        feed(m, samples)
        r = m.evaluate(len(samples))
        self.assertEqual(r['ijbc/adaface/nonfinite_features'], 1.0)
        self.assertEqual(r['ijbc/fused/nonfinite_features'], 1.0)
        for key in ('TAR@FAR=2e-01', 'AUC', '1N_rank1', '1N_TPIR@FPIR=1e-01'):
            self.assertTrue(math.isnan(r[f'ijbc/adaface/{key}']), key)
            self.assertTrue(math.isnan(r[f'ijbc/fused/{key}']), key)
        self.assertFalse(math.isnan(r['ijbc/qaconv/1N_rank1']))
        self.assertEqual(_nan_keys(r, 'ijbc/qaconv/'), [])

    def test_nan_norm_counts_its_template(self):
        samples = write_ijb(self.root)
        # Template 1 pools images 0-2; a NaN norm in one poisons the template.
        samples[1]['norm'] = torch.tensor([float('nan')])
        m = IJBMetric('ijbc', data_root=self.root, subset='IJBC', fars=(0.2, ),
                      progress=False, branches=('adaface', ))
        feed(m, samples)
        r = m.evaluate(len(samples))
        self.assertEqual(r['ijbc/adaface/nonfinite_features'], 1.0)
        self.assertTrue(math.isnan(r['ijbc/adaface/AUC']))


if __name__ == '__main__':
    unittest.main()
