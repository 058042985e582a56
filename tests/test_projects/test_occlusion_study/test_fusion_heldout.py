"""projects.occlusion_study.fusion_heldout: held-out z-sum vs visibility-aware
fusion."""
import contextlib
import io
import json
import os.path as osp
import tempfile
import unittest

from oaml_mm.datasets import write_verification_bin
from oaml_mm.evaluation.functional import (apply_visibility_fusion, auc,
                                           fit_visibility_fusion)
from projects.occlusion_study import fusion_heldout as cli
from tests.test_apis.helpers import write_checkpoint, write_config
from tests.test_datasets.helpers import encode, make_face
from tests.test_evaluation.test_functional.test_visibility_fusion import \
    visibility_problem


def _pairs(n, seed):
    cos, q, va, vb, y = visibility_problem(n, seed)
    return dict(adaface=cos, qaconv=q, vis_a=va, vis_b=vb, labels=y)


class TestFusionHeldout(unittest.TestCase):

    def test_evaluate_fits_on_one_set_and_scores_the_other(self):
        fit, ev = _pairs(1000, 0), _pairs(1000, 1)
        res = cli.evaluate(fit, ev, (1e-1, ))
        params = fit_visibility_fusion(fit['adaface'], fit['qaconv'],
                                       fit['vis_a'], fit['vis_b'],
                                       fit['labels'])
        ref = apply_visibility_fusion(params, ev['adaface'], ev['qaconv'],
                                      ev['vis_a'], ev['vis_b'])
        self.assertAlmostEqual(res['fused_vis']['AUC'],
                               100 * auc(ref, ev['labels']))
        self.assertAlmostEqual(res['adaface']['AUC'],
                               100 * auc(ev['adaface'], ev['labels']))
        self.assertGreater(res['fused_vis']['AUC'], res['fused']['AUC'] + 1)
        self.assertEqual(set(res['fused']),
                         {'accuracy', 'AUC', 'TAR@FAR=1e-01'})

    def test_cli_on_a_tiny_model(self):
        with tempfile.TemporaryDirectory() as tmp:
            for k, name in enumerate(('clean', 'occluded')):
                imgs = [encode(make_face(i // 2 + (i % 4 == 3), i + k, 112))
                        for i in range(24)]
                write_verification_bin(osp.join(tmp, f'{name}.bin'), imgs,
                                       [i % 2 == 0 for i in range(12)])
            cfg = write_config(osp.join(tmp, 'tiny.py'))
            ckpt = osp.join(tmp, 'tiny.pth')
            write_checkpoint(ckpt)
            out = osp.join(tmp, 'res.json')
            with contextlib.redirect_stdout(io.StringIO()) as text:
                code = cli.main([cfg, ckpt, '--bins', tmp, '--fit', 'clean',
                                 '--eval', 'occluded', '--out', out])
            self.assertEqual(code, 0)
            with open(out) as f:
                res = json.load(f)
            self.assertEqual(list(res), ['occluded'])
            self.assertEqual(set(res['occluded']),
                             {'adaface', 'qaconv', 'fused', 'fused_vis'})
            for r in res['occluded'].values():
                self.assertTrue(0 <= r['accuracy'] <= 100)
            self.assertIn('| fused_vis |', text.getvalue())
            with contextlib.redirect_stderr(io.StringIO()) as err:
                code = cli.main([cfg, ckpt, '--bins', tmp, '--fit', 'missing'])
            self.assertEqual(code, 2, err.getvalue())


if __name__ == '__main__':
    unittest.main()
