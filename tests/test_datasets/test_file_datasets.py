"""FaceImageFolder, VerificationBinDataset, IJBDataset, OcclusionMaskDataset."""
import os
import os.path as osp
import tempfile
import unittest

import cv2
import numpy as np
import torch

from oaml_mm.datasets import (ARCFACE_REF_POINTS, FaceImageFolder, IJBDataset,
                              OcclusionMaskDataset, VerificationBinDataset,
                              write_occlusion_mask_sample,
                              write_verification_bin)
from oaml_mm.errors import ConfigError, DataFormatError, MissingFileError

from .helpers import encode, make_face


class _Tmp(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()


class TestFaceImageFolder(_Tmp):

    def _make(self):
        for lab, name in enumerate(['alice', 'bob']):
            os.makedirs(osp.join(self.root, 'imgs', name))
            for i in range(lab + 2):
                with open(osp.join(self.root, 'imgs', name, f'{i}.jpg'),
                          'wb') as f:
                    f.write(encode(make_face(lab, i)))
        return osp.join(self.root, 'imgs')

    def test_folder_and_list_modes(self):
        root = self._make()
        ds = FaceImageFolder(root)
        self.assertEqual(len(ds), 5)
        self.assertEqual(ds.metainfo['num_classes'], 2)
        np.testing.assert_array_equal(ds.get_gt_labels(), [0, 0, 1, 1, 1])
        self.assertEqual(ds[4]['gt_label'], 1)
        lst = osp.join(self.root, 'list.txt')
        self.assertEqual(FaceImageFolder.write_list(root, lst), 5)
        ds2 = FaceImageFolder(root, ann_file=lst)
        self.assertEqual([ds2.get_data_info(i)['key'] for i in range(5)],
                         [ds.get_data_info(i)['key'] for i in range(5)])
        np.testing.assert_array_equal(ds2[2]['img'], ds[2]['img'])

    def test_list_errors(self):
        root = self._make()
        lst = osp.join(self.root, 'list.txt')
        with open(lst, 'w') as f:
            f.write('alice/0.jpg 0\nbob/0.jpg 5\n')
        with self.assertRaisesRegex(DataFormatError,
                                    r'list\.txt, record line 2.*label 5'):
            FaceImageFolder(root, ann_file=lst, num_classes=2)
        with open(lst, 'w') as f:
            f.write('alice/0.jpg 0\nbob/0.jpg x\n')
        with self.assertRaisesRegex(DataFormatError, 'line 2'):
            FaceImageFolder(root, ann_file=lst)
        with open(lst, 'w') as f:
            f.write('alice/9.jpg 0\n')
        with self.assertRaisesRegex(MissingFileError, '9.jpg'):
            FaceImageFolder(root, ann_file=lst)[0]


class TestVerificationBinDataset(_Tmp):

    def test_pairs(self):
        path = osp.join(self.root, 'lfw.bin')
        imgs = [encode(make_face(i // 2, i)) for i in range(6)]
        write_verification_bin(path, imgs, [True, False, True])
        ds = VerificationBinDataset(ann_file=path, pipeline=[
            dict(type='PackFaceInputs')])
        self.assertEqual(len(ds), 6)
        self.assertEqual(ds.metainfo['dataset_name'], 'lfw')
        out = ds[3]
        meta = out['data_samples'].metainfo
        self.assertEqual((meta['pair_index'], meta['pair_slot'],
                          meta['issame'], meta['dataset_name']),
                         (1, 1, False, 'lfw'))
        self.assertEqual(tuple(out['inputs'].shape), (3, 32, 32))
        np.testing.assert_array_equal(ds.issame, [True, False, True])
        # Pairs carry no identities: asking for labels is a config mistake.
        with self.assertRaisesRegex(ConfigError, 'VerificationBinDataset has '
                                    'no identity labels'):
            ds.get_gt_labels()

    def test_undecodable(self):
        path = osp.join(self.root, 'agedb_30.bin')
        write_verification_bin(path, [b'junk', encode(make_face(0))], [True])
        ds = VerificationBinDataset(ann_file=path)
        with self.assertRaisesRegex(DataFormatError,
                                    r'agedb_30\.bin, record image 0'):
            ds[0]


class TestIJBDataset(_Tmp):

    def _make(self):
        os.makedirs(osp.join(self.root, 'meta'))
        os.makedirs(osp.join(self.root, 'loose_crop'))
        tid, lmk = [], []
        for i in range(3):
            pts = ARCFACE_REF_POINTS * 1.5 + 20
            img = np.zeros((220, 220, 3), np.uint8)
            cx, cy = pts[2].astype(int)
            cv2.circle(img, (int(cx), int(cy)), 6, (255, 255, 255), -1)
            cv2.imwrite(osp.join(self.root, 'loose_crop', f'{i}.jpg'), img)
            tid.append(f'{i}.jpg {i // 2 + 1} {10 + i}')
            lmk.append(f'{i}.jpg ' + ' '.join(f'{v:.2f}' for v in pts.ravel())
                       + ' 0.95')
        with open(osp.join(self.root, 'meta', 'ijbc_face_tid_mid.txt'), 'w') as f:
            f.write('\n'.join(tid) + '\n')
        with open(osp.join(self.root, 'meta', 'ijbc_name_5pts_score.txt'),
                  'w') as f:
            f.write('\n'.join(lmk) + '\n')
        with open(osp.join(self.root, 'meta', 'ijbc_template_pair_label.txt'),
                  'w') as f:
            f.write('1 2 0\n1 1 1\n')

    def test_samples_aligned(self):
        self._make()
        ds = IJBDataset(self.root, subset='IJBC', pipeline=[
            dict(type='AlignFace5Points'), dict(type='PackFaceInputs')])
        self.assertEqual(len(ds), 3)
        out = ds[2]
        meta = out['data_samples'].metainfo
        self.assertEqual((meta['template_id'], meta['media_id']), (2, 12))
        self.assertAlmostEqual(meta['faceness'], 0.95, places=5)
        self.assertEqual(tuple(out['inputs'].shape), (3, 112, 112))
        x, y = ARCFACE_REF_POINTS[2].round().astype(int)
        self.assertGreater(int(out['inputs'][:, y, x].min()), 150)
        t1, t2, lab = ds.template_pairs()
        np.testing.assert_array_equal(lab, [0, 1])

    def test_missing_and_mismatched_meta(self):
        with self.assertRaisesRegex(MissingFileError, 'ijbb_face_tid_mid'):
            IJBDataset(self.root, subset='IJBB')
        self._make()
        p = osp.join(self.root, 'meta', 'ijbc_name_5pts_score.txt')
        lines = open(p).read().splitlines()
        lines[1] = lines[1].replace('1.jpg', 'x.jpg', 1)
        with open(p, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        with self.assertRaisesRegex(DataFormatError, 'line 2'):
            IJBDataset(self.root)


class TestOcclusionMaskDataset(_Tmp):

    def test_read_and_pack(self):
        img = make_face(0, size=112)
        mask = np.ones((112, 112), np.float32)
        mask[64:] = 0
        write_occlusion_mask_sample(self.root, 'id0/a', img, mask)
        write_occlusion_mask_sample(self.root, 'id1/b', img, mask, ext='.jpg')
        ds = OcclusionMaskDataset(self.root, pipeline=[
            dict(type='FaceRandomFlip', prob=1.0), dict(type='PackFaceInputs')])
        self.assertEqual(len(ds), 2)
        out = ds[0]
        vis = out['data_samples'].gt_visibility
        self.assertEqual(tuple(vis.shape), (1, 7, 7))
        self.assertTrue(torch.allclose(vis[0, :4], torch.ones(4, 7)))
        self.assertTrue(torch.allclose(vis[0, 4:], torch.zeros(3, 7)))
        with open(osp.join(self.root, 'labels.txt'), 'w') as f:
            f.write('id1/b 4\nid0/a 1\n')
        ds = OcclusionMaskDataset(self.root, num_classes=5)
        np.testing.assert_array_equal(ds.get_gt_labels(), [4, 1])
        self.assertEqual(ds[0]['key'], 'id1/b')

    def test_mask_size_mismatch(self):
        write_occlusion_mask_sample(self.root, 'a', make_face(0, size=32),
                                    np.ones((32, 32)))
        cv2.imwrite(osp.join(self.root, 'masks', 'a.png'),
                    np.full((16, 32), 255, np.uint8))
        with self.assertRaisesRegex(DataFormatError,
                                    r'masks/a\.png, record a, field .size.*'
                                    r'32x16.*32x32'):
            OcclusionMaskDataset(self.root)[0]
        with self.assertRaises(ValueError):
            write_occlusion_mask_sample(self.root, 'b', make_face(0, size=32),
                                        np.ones((16, 32)))


if __name__ == '__main__':
    unittest.main()


class TestBaseFaceDataset(unittest.TestCase):

    def test_format_interface_is_abstract(self):
        from oaml_mm.datasets.base_face_dataset import BaseFaceDataset
        with self.assertRaisesRegex(TypeError, 'abstract'):
            BaseFaceDataset(lazy_init=True)
