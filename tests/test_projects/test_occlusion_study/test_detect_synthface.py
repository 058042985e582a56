"""projects.occlusion_study.detect_synthface on three SynthFace subjects."""
import unittest

import numpy as np
import torch

from oaml_mm.apis import FaceRecognizer
from projects.occlusion_study import detect_synthface
from tests.test_apis.helpers import TINY_MODEL


class TestDetectSynthFace(unittest.TestCase):

    def test_three_subjects(self):
        res = detect_synthface.evaluate(subjects=3, occluded=0.5, seed=0,
                                        tolerance=0.4)
        table = res['by_group']
        self.assertEqual(table['all']['images'],
                         table['clean']['images'] +
                         table['any occluder']['images'])
        self.assertGreater(table['clean']['rate'], 0.3)
        hit = table['all']['detected']
        self.assertEqual(sum(table['all']['paths'].values()), hit)
        self.assertEqual(table['all']['box_fallback'],
                         table['all']['images'] - hit)
        # Detected landmarks: a few pixels off the given ones, eyes closest.
        self.assertLess(table['clean']['eyes_mean'], 8.0)
        self.assertLess(table['clean']['err_mean'], 12.0)
        tars = res['verification']['tar_at_far']
        self.assertEqual(len(tars), 6)
        for v in tars.values():
            self.assertTrue(all(0.0 <= t <= 1.0 for t in v.values()))
        text = detect_synthface.markdown(res)
        self.assertIn('| clean |', text)
        self.assertIn('whole face / given', text)

    def test_model_scores_match_the_recognizer(self):
        torch.manual_seed(0)
        rec = FaceRecognizer(TINY_MODEL)
        crops = np.random.default_rng(0).integers(
            0, 256, (4, 112, 112, 3), dtype=np.uint8)
        i, j = np.array([0, 1, 2]), np.array([1, 2, 3])
        got = detect_synthface.model_scores(rec, crops, i, j)
        self.assertEqual(set(got), {'OAML adaface', 'OAML qaconv'})
        images = torch.from_numpy(crops).permute(0, 3, 1, 2)
        out = rec.compare(images[0], images[1])
        self.assertAlmostEqual(float(got['OAML adaface'][0]),
                               out['scores']['adaface'], places=4)
        self.assertAlmostEqual(float(got['OAML qaconv'][0]),
                               out['scores']['qaconv'], places=3)


if __name__ == '__main__':
    unittest.main()
