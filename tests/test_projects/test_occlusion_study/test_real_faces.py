"""real_faces: the split by image, and the folder a segmenter config reads."""
import os
import os.path as osp
import tempfile
import unittest

import numpy as np
from mmengine.registry import init_default_scope

from oaml_mm.registry import DATASETS
from projects.occlusion_study.real_faces import (GROUPS, package_photos,
                                                 write_real_faces)


class TestRealFaces(unittest.TestCase):

    def test_split_by_image(self):
        # Without the insightface folder: the installed packages' photos only.
        photos = package_photos(extra=None)
        groups = {name: group for name, _, group, _ in photos}
        self.assertEqual(
            sorted(n for n, g in groups.items() if g == 'portraits'),
            ['astronaut', 'cameraman', 'grace_hopper'])
        lfw = sorted(n for n in groups if n.startswith('lfw_'))
        self.assertEqual(len(lfw), 100)
        self.assertEqual({groups[n] for n in lfw[:50]}, {'train'})
        self.assertEqual({groups[n] for n in lfw[50:]}, {'test'})
        with tempfile.TemporaryDirectory() as d:
            # A missing insightface folder adds nothing.
            self.assertEqual(len(package_photos(extra=d)), len(photos))
        img = photos[-1][1]
        self.assertEqual((img.dtype, img.ndim, img.shape[2]), (np.uint8, 3, 3))

    def test_prepare_refuses_bad_paths_before_any_work(self):
        # Before: OUT an existing file raised NotADirectoryError after the
        # alignment; a missing --extra printed OpenCV warnings and the set was
        # written anyway.
        from projects.occlusion_study import real_faces
        with tempfile.TemporaryDirectory() as d:
            afile = osp.join(d, 'afile')
            open(afile, 'w').close()
            missing = osp.join(d, 'nonexist')
            empty = osp.join(d, 'empty')
            os.mkdir(empty)
            out = osp.join(d, 'out')
            for argv, msg in (
                    ([afile], f"OutputPathError: OUT '{afile}' is a file; "
                     'expected a folder'),
                    ([out, '--extra', missing],
                     f"ConfigError: --extra '{missing}': no such folder; "
                     'expected the folder holding t1.jpg and '
                     'Tom_Hanks_54745.png'),
                    ([out, '--extra', empty],
                     f"ConfigError: --extra '{empty}': the folder holds "
                     'none of t1.jpg and Tom_Hanks_54745.png')):
                with self.subTest(argv=argv), \
                        self.assertRaises(SystemExit) as cm:
                    real_faces.main(['prepare'] + argv)
                self.assertTrue(str(cm.exception.code).startswith(msg),
                                cm.exception.code)
            self.assertFalse(osp.exists(out))

    def test_written_folder_reads_as_face_image_folder(self):
        crops = np.random.RandomState(0).randint(
            0, 256, (4, 112, 112, 3)).astype(np.uint8)
        names = ['a', 'b', 'c', 'd']
        groups = ['train', 'test', 'train', 'portraits']
        with tempfile.TemporaryDirectory() as d:
            counts = write_real_faces(d, crops, names, groups)
            self.assertEqual(counts, dict(train=2, test=1, portraits=1))
            for g in GROUPS:
                self.assertTrue(osp.isfile(osp.join(d, f'{g}.txt')))
            init_default_scope('oaml_mm')
            ds = DATASETS.build(dict(type='FaceImageFolder', data_root=d,
                                     ann_file='train.txt', pipeline=[]))
            self.assertEqual(len(ds), 2)
            # Lossless: the crop read back is the crop written (RGB).
            np.testing.assert_array_equal(ds[1]['img'], crops[2])
            with self.assertRaisesRegex(ValueError, 'unknown groups'):
                write_real_faces(d, crops, names, ['train'] * 3 + ['val'])
            with self.assertRaisesRegex(ValueError, 'as many'):
                write_real_faces(d, crops, names[:3], groups)


if __name__ == '__main__':
    unittest.main()
