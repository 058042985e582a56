import filecmp
import os
import os.path as osp
import tempfile
import unittest
from dataclasses import replace

import numpy as np

from oaml_mm.datasets import VerificationBinDataset
from oaml_mm.datasets.transforms.formatting import visibility_to_grid
from oaml_mm.synthface import (HELDOUT_OCCLUDERS, HELDOUT_OCCLUSION_TYPES,
                               OCCLUSION_TYPES, SynthFaceConfig,
                               generate_synthface, heldout_contact_sheet,
                               render_face, restyle_identity,
                               sample_identities, sample_nuisance, stream_rng)
from oaml_mm.synthface.writer import CALIB_PAIR_KINDS

TINY = SynthFaceConfig(identities=4, images_per_id=2, test_identities=6,
                       occluded_per_id=1, val_images_per_id=4, val_pairs=40,
                       ijbc_subjects=2, ijbc_probe_templates=1)
HELDOUT_NAMES = ('heldout_clean', 'heldout_masked', 'heldout_occluded')


def _files(root):
    out = []
    for d, _, files in os.walk(root):
        out += [osp.relpath(osp.join(d, f), root) for f in files]
    return sorted(out)


class TestHeldoutOccluders(unittest.TestCase):

    def test_families_and_types(self):
        self.assertEqual(set(HELDOUT_OCCLUDERS), set(HELDOUT_OCCLUSION_TYPES))
        self.assertEqual(len(HELDOUT_OCCLUSION_TYPES), 5)
        self.assertFalse(set(HELDOUT_OCCLUSION_TYPES) & set(OCCLUSION_TYPES))

    def test_exact_masks(self):
        people = sample_identities(2, seed=3)
        for occ in HELDOUT_OCCLUSION_TYPES:
            for person in people:
                for k in range(3):
                    nuis = sample_nuisance(stream_rng(3, 40, person.index, k), 0.5)
                    r = render_face(person, nuis, occ, stream_rng(3, 41, k),
                                    style='B')
                    vis = r.visibility
                    self.assertEqual(vis.shape, (112, 112))
                    self.assertTrue(set(np.unique(vis)) <= {0, 1})
                    hidden = vis == 0
                    self.assertGreater(hidden.mean(), 0.005, (occ, k))
                    self.assertLess(hidden.mean(), 0.9, (occ, k))
                    # visible pixels are the clean image's, hidden ones are not
                    np.testing.assert_array_equal(r.image[~hidden],
                                                  r.clean[~hidden])
                    self.assertGreater(
                        np.abs(r.image[hidden].astype(int) -
                               r.clean[hidden]).mean(), 2.0, (occ, k))
                    grid = visibility_to_grid(vis)
                    self.assertEqual(grid.shape, (7, 7))
                    self.assertTrue(np.all((grid >= 0) & (grid <= 1)))
                    self.assertAlmostEqual(float(grid.mean()), float(vis.mean()),
                                           places=5)

    def test_eye_band_covers_the_eyes(self):
        person = sample_identities(1, seed=0)[0]
        covered = []
        for k in range(8):
            nuis = sample_nuisance(stream_rng(0, 42, k), 0.0)
            r = render_face(person, nuis, 'eye_band', stream_rng(0, 43, k), style='B')
            # ArcFace template eyes at (38.3, 51.7) and (73.5, 51.5)
            covered.append(r.visibility[48:56, 30:82].mean() < 0.9)
        self.assertTrue(all(covered))

    def test_unknown_type_and_style(self):
        person = sample_identities(1, seed=0)[0]
        nuis = sample_nuisance(stream_rng(0, 1), 0.5)
        with self.assertRaisesRegex(ValueError, 'eye_band'):
            render_face(person, nuis, 'cape', stream_rng(0, 2))
        with self.assertRaisesRegex(ValueError, 'face style'):
            render_face(person, nuis, style='C')


class TestStyleB(unittest.TestCase):

    def test_style_b_differs_and_a_is_default(self):
        person = sample_identities(1, seed=0)[0]
        nuis = sample_nuisance(stream_rng(0, 5), 0.3)
        a = render_face(person, nuis)
        a2 = render_face(person, nuis, style='A')
        b = render_face(person, nuis, style='B')
        np.testing.assert_array_equal(a.image, a2.image)
        self.assertGreater(np.abs(a.image.astype(int) - b.image).mean(), 8.0)
        # same person, same pose: the landmarks stay near the template
        self.assertLess(np.abs(a.landmarks - b.landmarks).max(), 8.0)

    def test_restyle_identity(self):
        person = sample_identities(1, seed=0)[0]
        other = restyle_identity(person)
        self.assertEqual((other.index, other.categories, other.texture_seed),
                         (person.index, person.categories, person.texture_seed))
        self.assertAlmostEqual(other.eye_width, person.eye_width * 1.2)
        self.assertAlmostEqual(other.mouth_y, person.mouth_y - 3.0)
        self.assertEqual(person.eye_width, sample_identities(1, seed=0)[0].eye_width)

    def test_preview(self):
        sheet = heldout_contact_sheet(identities=1)
        self.assertEqual(sheet.shape, (112, 112 * (2 + 2 * 5), 3))


class TestHeldoutSets(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.root = osp.join(cls.tmp.name, 'with')
        cls.manifest = generate_synthface(cls.root, TINY, workers=1, log=None)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def _read(self, name):
        val = osp.join(self.root, 'val')
        ds = VerificationBinDataset(ann_file=f'{name}.bin', data_root=val,
                                    side_files=True)
        labels = np.load(osp.join(val, f'{name}.labels.npy'))
        with open(osp.join(val, f'{name}.types.txt')) as f:
            types = f.read().split()
        vis = np.load(osp.join(val, f'{name}.vis.npy')).astype(np.float32)
        return ds, labels, types, vis

    def test_defaults(self):
        self.assertEqual((TINY.heldout_identities, TINY.calib_identities), (6, 6))
        self.assertEqual(SynthFaceConfig().heldout_identities, 100)
        self.assertEqual(SynthFaceConfig(heldout_identities=0).heldout_identities, 0)

    def test_heldout_sets(self):
        first = TINY.identities + TINY.test_identities
        heldout = set(HELDOUT_OCCLUSION_TYPES)
        counts = self.manifest['counts']
        self.assertEqual(counts['heldout_identity_range'], [first, first + 5])
        self.assertEqual(sum(counts['heldout_types'].values()),
                         counts['heldout_images'])
        self.assertTrue(set(counts['heldout_types']) <= heldout)
        for name in HELDOUT_NAMES:
            ds, labels, types, vis = self._read(name)
            self.assertEqual(len(ds), 80)
            self.assertEqual(int(ds.issame.sum()), 20)
            np.testing.assert_array_equal(labels[0::2] == labels[1::2], ds.issame)
            # new identities, after the training and test ones
            self.assertTrue(np.all((labels >= first) & (labels < first + 6)))
            s = ds[1]
            self.assertEqual(s['img'].shape, (112, 112, 3))
            self.assertEqual(s['occlusion_type'], types[1])
            mask = np.asarray(s['visibility_mask'], np.float32)
            self.assertEqual(mask.shape, (112, 112))
            np.testing.assert_allclose(visibility_to_grid(mask), vis[1], atol=1e-3)
            if name == 'heldout_clean':
                self.assertEqual(set(types), {'none'})
                self.assertTrue(np.all(vis == 1))
            elif name == 'heldout_masked':
                self.assertEqual(set(types[0::2]), {'none'})
                self.assertTrue(set(types[1::2]) <= heldout)
                self.assertTrue(np.all(vis[1::2].reshape(40, -1).min(1) < 1))
            else:
                self.assertTrue(set(types) <= heldout)

    def test_calib_set(self):
        first = TINY.identities + TINY.test_identities + TINY.heldout_identities
        ds, labels, types, vis = self._read('calib')
        self.assertEqual(len(ds), 80)
        self.assertTrue(np.all((labels >= first) & (labels < first + 6)))
        self.assertTrue(set(types) <= set(OCCLUSION_TYPES))
        self.assertFalse(set(types) & set(HELDOUT_OCCLUSION_TYPES))
        kinds = [('clean' if a == 'none' else 'occluded',
                  'clean' if b == 'none' else 'occluded')
                 for a, b in zip(types[0::2], types[1::2])]
        self.assertEqual(kinds, [CALIB_PAIR_KINDS[i % 3] for i in range(40)])
        self.assertEqual(self.manifest['counts']['calib_identity_range'],
                         [first, first + 5])

    def test_old_outputs_unchanged_by_the_heldout_part(self):
        without = osp.join(self.tmp.name, 'without')
        man = generate_synthface(
            without, replace(TINY, heldout_identities=0, calib_identities=0),
            workers=1, log=None)
        self.assertNotIn('heldout_identities', man['counts'])
        old = [f for f in _files(without) if f != 'synthface.json']
        new = _files(self.root)
        self.assertGreater(len(old), 30)
        added = {f for f in new if f not in old} - {'synthface.json'}
        self.assertEqual({f.split('/')[1].split('.')[0] for f in added},
                         set(HELDOUT_NAMES) | {'calib'})
        _, mismatch, errors = filecmp.cmpfiles(without, self.root, old,
                                               shallow=False)
        self.assertEqual((mismatch, errors), ([], []))


if __name__ == '__main__':
    unittest.main()
