"""VerificationBinDataset(side_files=True): SynthFace's true visibility and types."""
import os.path as osp
import shutil
import tempfile
import unittest

import numpy as np

from oaml_mm.datasets import VerificationBinDataset, write_verification_bin
from oaml_mm.datasets.transforms import visibility_to_grid
from oaml_mm.datasets.verification_bin import expand_grid
from oaml_mm.errors import DataFormatError, MissingFileError
from .helpers import encode, make_face


class TestSideFiles(unittest.TestCase):

    def setUp(self):
        self.root = tempfile.mkdtemp()
        self.path = osp.join(self.root, 'occluded.bin')
        imgs = [encode(make_face(i // 2, i, size=112)) for i in range(4)]
        write_verification_bin(self.path, imgs, [True, False])
        rng = np.random.default_rng(0)
        self.vis = rng.random((4, 7, 7)).astype(np.float16)
        np.save(osp.join(self.root, 'occluded.vis.npy'), self.vis)
        self.types = ['none', 'niqab', 'hand', 'scarf']
        with open(osp.join(self.root, 'occluded.types.txt'), 'w') as f:
            f.write('\n'.join(self.types) + '\n')

    def tearDown(self):
        shutil.rmtree(self.root)

    def test_grid_round_trip(self):
        grid = np.random.default_rng(1).random((7, 7)).astype(np.float32)
        full = expand_grid(grid, (112, 112))
        self.assertEqual(full.shape, (112, 112))
        np.testing.assert_allclose(visibility_to_grid(full), grid, atol=1e-6)

    def test_samples_carry_truth(self):
        ds = VerificationBinDataset(ann_file=self.path, side_files=True,
                                    pipeline=[dict(type='PackFaceInputs')])
        for i in range(4):
            s = ds[i]['data_samples']
            np.testing.assert_allclose(s.gt_visibility[0].numpy(),
                                       self.vis[i].astype(np.float32),
                                       atol=1e-6)
            self.assertEqual(s.metainfo['occlusion_type'], self.types[i])

    def test_types_file_with_byte_order_mark(self):
        # The mark once became part of the first type ('\ufeffnone': not clean).
        with open(osp.join(self.root, 'occluded.types.txt'), 'w',
                  encoding='utf-8-sig') as f:
            f.write('\n'.join(self.types) + '\n')
        ds = VerificationBinDataset(ann_file=self.path, side_files=True,
                                    pipeline=[dict(type='PackFaceInputs')])
        self.assertEqual(ds[0]['data_samples'].metainfo['occlusion_type'],
                         'none')

    def test_off_by_default(self):
        ds = VerificationBinDataset(ann_file=self.path,
                                    pipeline=[dict(type='PackFaceInputs')])
        s = ds[1]['data_samples']
        self.assertTrue(bool((s.gt_visibility == 1).all()))
        self.assertNotIn('occlusion_type', s.metainfo)

    def test_errors(self):
        np.save(osp.join(self.root, 'occluded.vis.npy'), self.vis[:3])
        with self.assertRaisesRegex(DataFormatError,
                                    r'occluded\.vis\.npy.*\[4, rows, cols\]'):
            VerificationBinDataset(ann_file=self.path, side_files=True)[0]
        np.save(osp.join(self.root, 'occluded.vis.npy'), self.vis * 2)
        with self.assertRaisesRegex(DataFormatError, r'\[0, 1\]'):
            VerificationBinDataset(ann_file=self.path, side_files=True)[0]
        np.save(osp.join(self.root, 'occluded.vis.npy'), self.vis)
        with open(osp.join(self.root, 'occluded.types.txt'), 'w') as f:
            f.write('none\n')
        with self.assertRaisesRegex(DataFormatError, r'1 occlusion types'):
            VerificationBinDataset(ann_file=self.path, side_files=True)[0]
        shutil.copy(self.path, osp.join(self.root, 'lfw.bin'))
        with self.assertRaisesRegex(MissingFileError, r'lfw\.vis\.npy'):
            VerificationBinDataset(ann_file=osp.join(self.root, 'lfw.bin'),
                                   side_files=True)[0]


if __name__ == '__main__':
    unittest.main()
