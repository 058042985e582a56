"""TinyFaceDataset: release layout, subjects from file names, resizing, errors."""
import os
import os.path as osp
import tempfile
import unittest

import cv2
import numpy as np

from oaml_mm.datasets import TinyFaceDataset, tinyface_role_subject
from oaml_mm.errors import DataFormatError, MissingFileError
from tests.test_datasets.helpers import make_face

FILES = {
    'Probe': ['3_1.jpg', '12_2.jpg'],
    'Gallery_Match': ['3_5.jpg', '12_1.jpg', '40_1.png'],
    'Gallery_Distractor': ['a.jpg', 'sub/b_7.jpg'],
}


def write_layout(root, files=FILES, size=(20, 16)):
    for role, names in files.items():
        for i, name in enumerate(names):
            path = osp.join(root, 'Testing_Set', role, name)
            os.makedirs(osp.dirname(path), exist_ok=True)
            img = cv2.resize(make_face(i, i, 32), size[::-1])
            cv2.imwrite(path, img)


class TestTinyFaceDataset(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        write_layout(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def test_layout(self):
        ds = TinyFaceDataset(data_root=self.tmp.name,
                             pipeline=[dict(type='PackFaceInputs')])
        self.assertEqual(len(ds), 7)
        keys = [ds.get_data_info(i)['key'] for i in range(len(ds))]
        self.assertEqual(keys, [
            'Probe/12_2.jpg', 'Probe/3_1.jpg', 'Gallery_Match/12_1.jpg',
            'Gallery_Match/3_5.jpg', 'Gallery_Match/40_1.png',
            'Gallery_Distractor/a.jpg', 'Gallery_Distractor/sub/b_7.jpg'])
        np.testing.assert_array_equal(ds.get_gt_labels(),
                                      [12, 3, 12, 3, 40, -1, -1])
        sample = ds[0]
        self.assertEqual(tuple(sample['inputs'].shape), (3, 112, 112))
        self.assertEqual(sample['data_samples'].key, 'Probe/12_2.jpg')
        native = TinyFaceDataset(data_root=self.tmp.name, img_size=None,
                                 pipeline=[dict(type='PackFaceInputs')])
        self.assertEqual(tuple(native[0]['inputs'].shape), (3, 20, 16))

    def test_role_subject(self):
        self.assertEqual(tinyface_role_subject('Probe/7_1.jpg'), ('Probe', 7))
        self.assertEqual(tinyface_role_subject('Gallery_Distractor/x.jpg'),
                         ('Gallery_Distractor', -1))
        with self.assertRaises(DataFormatError):
            tinyface_role_subject('Gallery/7_1.jpg')
        with self.assertRaises(DataFormatError):
            tinyface_role_subject('Probe/seven_1.jpg')

    def test_errors(self):
        os.rename(osp.join(self.tmp.name, 'Testing_Set', 'Gallery_Distractor'),
                  osp.join(self.tmp.name, 'Testing_Set', 'Distractors'))
        with self.assertRaises(MissingFileError):
            len(TinyFaceDataset(data_root=self.tmp.name))
        with tempfile.TemporaryDirectory() as other:
            bad = dict(FILES, Probe=['x_1.jpg'])
            write_layout(other, bad)
            with self.assertRaises(DataFormatError) as cm:
                len(TinyFaceDataset(data_root=other))
            self.assertIn('Probe/x_1.jpg', str(cm.exception))


if __name__ == '__main__':
    unittest.main()
