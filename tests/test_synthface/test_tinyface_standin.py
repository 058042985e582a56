"""TinyFace stand-in: layout, low resolution, disjoint distractors, determinism."""
import glob
import hashlib
import os.path as osp
import tempfile
import unittest

import cv2

from oaml_mm.datasets import TinyFaceDataset
from oaml_mm.errors import ConfigError
from oaml_mm.synthface import SynthFaceConfig
from oaml_mm.synthface.tinyface import write_tinyface_standin

CFG = SynthFaceConfig(identities=2, test_identities=6)


def _digest(root):
    h = hashlib.sha1()
    for p in sorted(glob.glob(osp.join(root, '**', '*.jpg'), recursive=True)):
        h.update(osp.relpath(p, root).encode())
        with open(p, 'rb') as f:
            h.update(f.read())
    return h.hexdigest()


class TestTinyFaceStandIn(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.root = osp.join(cls.tmp.name, 'tinyface')
        cls.counts = write_tinyface_standin(
            cls.root, CFG, subjects=2, distractor_identities=3,
            probes_per_subject=2, matches_per_subject=1,
            distractors_per_identity=2, min_side=12, max_side=20)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_layout_read_by_dataset(self):
        self.assertEqual(self.counts, {'Probe': 4, 'Gallery_Match': 2,
                                       'Gallery_Distractor': 6})
        ds = TinyFaceDataset(data_root=self.root,
                             pipeline=[dict(type='PackFaceInputs')])
        self.assertEqual(len(ds), 12)
        labels = ds.get_gt_labels()
        roles = [ds.get_data_info(i)['key'].split('/')[0]
                 for i in range(len(ds))]
        probe = {int(lab) for lab, r in zip(labels, roles) if r == 'Probe'}
        match = {int(lab) for lab, r in zip(labels, roles)
                 if r == 'Gallery_Match'}
        self.assertEqual(probe, {1, 2})
        self.assertEqual(match, probe)
        self.assertEqual(tuple(ds[0]['inputs'].shape), (3, 112, 112))

    def test_low_resolution(self):
        for p in glob.glob(osp.join(self.root, 'Testing_Set', '*', '*.jpg')):
            h, w = cv2.imread(p).shape[:2]
            self.assertTrue(12 <= h <= 20, (p, h))
            self.assertLessEqual(w, h)

    def test_deterministic(self):
        with tempfile.TemporaryDirectory() as other:
            write_tinyface_standin(other, CFG, subjects=2,
                                   distractor_identities=3,
                                   probes_per_subject=2,
                                   distractors_per_identity=2, min_side=12,
                                   max_side=20)
            self.assertEqual(_digest(other), _digest(self.root))

    def test_errors(self):
        with self.assertRaises(ConfigError):
            write_tinyface_standin(self.tmp.name, CFG, subjects=4,
                                   distractor_identities=3)
        with self.assertRaises(ConfigError):
            write_tinyface_standin(self.tmp.name, CFG, subjects=1,
                                   min_side=40, max_side=20)


if __name__ == '__main__':
    unittest.main()
