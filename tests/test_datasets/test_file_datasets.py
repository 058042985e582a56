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
from oaml_mm.datasets.occlusion_mask_dataset import mask_to_visibility
from oaml_mm.errors import ConfigError, DataFormatError, MissingFileError
from .helpers import encode, huge_header_png, make_face


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


class TestFolderVariants(_Tmp):
    """Hidden/system entries, paths leaving the root, big headers (issues 14, 15)."""

    def _make(self):
        root = osp.join(self.root, 'imgs')
        for lab, name in enumerate(['alice', 'bob']):
            os.makedirs(osp.join(root, name))
            for i in range(2):
                with open(osp.join(root, name, f'{i}.jpg'), 'wb') as f:
                    f.write(encode(make_face(lab, i)))
        return root

    def _litter(self, root, inside):
        """What Jupyter, macOS and Windows leave beside images."""
        for d in ('.ipynb_checkpoints', '__MACOSX', '.Trash-1000'):
            os.makedirs(osp.join(root, d), exist_ok=True)
            with open(osp.join(root, d, 'x.jpg'), 'wb') as f:
                f.write(encode(make_face(9)))
        for name in ('.DS_Store', 'Thumbs.db', 'desktop.ini', '._0.jpg',
                     '.hidden.png'):
            with open(osp.join(inside, name), 'wb') as f:
                f.write(b'\x00\x05\x16\x07 AppleDouble')

    def test_hidden_entries_skipped_in_folder_scan(self):
        root = self._make()
        self._litter(root, osp.join(root, 'alice'))
        os.makedirs(osp.join(root, 'bob', '.ipynb_checkpoints'))
        with open(osp.join(root, 'bob', '.ipynb_checkpoints', '0-checkpoint.jpg'),
                  'wb') as f:
            f.write(encode(make_face(1)))
        ds = FaceImageFolder(root)
        # .ipynb_checkpoints once became identity 0 and shifted every label.
        self.assertEqual(ds.classes, ['alice', 'bob'])
        self.assertEqual(ds.metainfo['num_classes'], 2)
        np.testing.assert_array_equal(ds.get_gt_labels(), [0, 0, 1, 1])
        self.assertEqual([ds.get_data_info(i)['key'] for i in range(4)],
                         ['alice/0.jpg', 'alice/1.jpg', 'bob/0.jpg', 'bob/1.jpg'])
        out = osp.join(self.root, 'list.txt')
        self.assertEqual(FaceImageFolder.write_list(root, out), 4)

    def test_hidden_entries_skipped_in_occlusion_scan(self):
        write_occlusion_mask_sample(self.root, 'id0/a', make_face(0),
                                    np.ones((32, 32)))
        self._litter(osp.join(self.root, 'images'),
                     osp.join(self.root, 'images', 'id0'))
        ds = OcclusionMaskDataset(self.root)
        self.assertEqual(len(ds), 1)
        self.assertEqual(ds[0]['key'], 'id0/a')

    def test_list_paths_leaving_the_root_refused(self):
        root = self._make()
        secret = osp.join(self.root, 'secret.jpg')
        with open(secret, 'wb') as f:
            f.write(encode(make_face(3)))
        lst = osp.join(self.root, 'list.txt')
        for bad in ('../secret.jpg', 'alice/../../secret.jpg', secret,
                    '..\\secret.jpg', 'C:/x.jpg'):
            with open(lst, 'w') as f:
                f.write(f'alice/0.jpg 0\n{bad} 1\n')
            with self.assertRaisesRegex(DataFormatError,
                                        r"list\.txt, record line 2, field "
                                        r"'image'.*leaves the data root"):
                FaceImageFolder(root, ann_file=lst)
        with open(lst, 'w') as f:
            f.write('alice/../bob/0.jpg 1\n./alice/0.jpg 0\n')
        self.assertEqual(len(FaceImageFolder(root, ann_file=lst)), 2)
        with open(lst, 'wb') as f:
            f.write(b'alice/0.jpg 0\n\xff\xfe.jpg 1\n')
        with self.assertRaisesRegex(DataFormatError, r'list\.txt, record line 2'
                                    r'.*not UTF-8'):
            FaceImageFolder(root, ann_file=lst)

    def test_occlusion_labels_leaving_the_root_or_not_utf8(self):
        write_occlusion_mask_sample(self.root, 'a', make_face(0),
                                    np.ones((32, 32)))
        labels = osp.join(self.root, 'labels.txt')
        for raw, what in ((b'a 0\n../../etc/passwd 1\n', 'leaves the data root'),
                          (b'a 0\n\xe9t\xe9 1\n', 'not UTF-8')):
            with open(labels, 'wb') as f:
                f.write(raw)
            with self.assertRaisesRegex(DataFormatError,
                                        rf'labels\.txt, record line 2.*{what}'):
                OcclusionMaskDataset(self.root)

    def test_huge_image_header_is_a_bad_image(self):
        # 70 bytes claiming 65535 x 65535: a bare cv2.error once, past 'skip'.
        from oaml_mm.datasets.base_face_dataset import (MAX_IMAGE_PIXELS,
                                                        decode_image)
        bomb = huge_header_png()
        self.assertLess(len(bomb), 80)
        with self.assertRaisesRegex(DataFormatError,
                                    r"x\.png, record 7, field 'image': image "
                                    r'header claims 65535x65535 pixels'):
            decode_image(bomb, 'x.png', 7)
        # The same in a JPEG frame header (a real image, dimensions patched).
        jpeg = bytearray(encode(make_face(0)))
        sof = jpeg.index(b'\xff\xc0')
        jpeg[sof + 5:sof + 9] = b'\xea\x60\xea\x60'  # 60000 x 60000
        with self.assertRaisesRegex(DataFormatError, '60000x60000'):
            decode_image(bytes(jpeg), 'x.jpg')
        # Below Pillow's own bomb limit but above ours: refused by the header.
        side = int(MAX_IMAGE_PIXELS ** 0.5) + 1
        with self.assertRaisesRegex(DataFormatError, f'{side}x{side}'):
            decode_image(huge_header_png(side, side), 'x.png')
        # A format Pillow does not probe still cannot raise cv2.error.
        with self.assertRaises(DataFormatError):
            decode_image(np.zeros(0, np.uint8), 'x.png')
        root = self._make()
        with open(osp.join(root, 'bob', '1.jpg'), 'wb') as f:
            f.write(bomb)
        with self.assertRaisesRegex(DataFormatError, r'bob/1\.jpg'):
            FaceImageFolder(root)[3]
        ds = FaceImageFolder(root, on_bad_image='skip')
        self.assertEqual(ds[3]['img'].shape, (32, 32, 3))
        # mmengine redraws at random: the bad image may be drawn again.
        self.assertGreaterEqual(ds.num_skipped(), 1)
        ds.log_skipped()
        self.assertEqual([ds[i]['img'].shape for i in range(3)],
                         [(32, 32, 3)] * 3)
        self.assertEqual(ds.num_skipped(), 0)


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

    def test_landmark_file_in_another_layout_refused(self):
        # x1..x5 y1..y5 lines once aligned every IJB face into garbage.
        self._make()
        p = osp.join(self.root, 'meta', 'ijbc_name_5pts_score.txt')
        rows = []
        for line in open(p).read().splitlines():
            parts = line.split()
            pts = np.asarray(parts[1:11], np.float64).reshape(5, 2)
            xy = np.concatenate([pts[:, 0], pts[:, 1]])
            rows.append(' '.join([parts[0]] + [f'{v:.2f}' for v in xy] +
                                 [parts[11]]))
        with open(p, 'w') as f:
            f.write('\n'.join(rows) + '\n')
        with self.assertRaisesRegex(DataFormatError,
                                    'ijbc_name_5pts_score.txt: 3 of 3 sampled '
                                    'faces .* read as all x then all y'):
            IJBDataset(self.root)

    def test_image_names_leaving_the_root_refused(self):
        self._make()
        with open(osp.join(self.root, 'secret.jpg'), 'wb') as f:
            f.write(encode(make_face(0)))
        for name in ('../secret.jpg', '/etc/hostname', 'a/../../secret.jpg'):
            for meta in ('ijbc_face_tid_mid.txt', 'ijbc_name_5pts_score.txt'):
                self._make_clean()
                p = osp.join(self.root, 'meta', meta)
                text = open(p).read().replace('1.jpg', name, 1)
                with open(p, 'w') as f:
                    f.write(text)
                with self.subTest(name=name, meta=meta), self.assertRaisesRegex(
                        DataFormatError, rf'{meta}, record line 2, field '
                        r"'image'.*leaves the data root"):
                    IJBDataset(self.root)

    def _make_clean(self):
        import shutil
        shutil.rmtree(osp.join(self.root, 'meta'))
        shutil.rmtree(osp.join(self.root, 'loose_crop'))
        self._make()


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

    def test_binary_01_masks(self):
        # 0/1 masks (common in public occlusion generators) once read as 1/255
        # visibility: every face fully occluded.
        img = make_face(0, size=112)
        mask01 = np.ones((112, 112), np.uint8)
        mask01[64:] = 0
        write_occlusion_mask_sample(self.root, 'w', img, mask01)
        self.assertEqual(cv2.imread(osp.join(self.root, 'masks', 'w.png'),
                                    cv2.IMREAD_GRAYSCALE).max(), 255)
        write_occlusion_mask_sample(self.root, 'r', img, np.ones((112, 112)))
        cv2.imwrite(osp.join(self.root, 'masks', 'r.png'), mask01)  # stored 0/1
        write_occlusion_mask_sample(self.root, 'b', img, mask01.astype(bool))
        ds = OcclusionMaskDataset(self.root, pipeline=[dict(type='PackFaceInputs')])
        for i in range(3):
            vis = ds[i]['data_samples'].gt_visibility
            self.assertTrue(torch.equal(vis[0, :4], torch.ones(4, 7)), i)
            self.assertTrue(torch.equal(vis[0, 4:], torch.zeros(3, 7)), i)
        # 0..255 with partial values keeps its meaning.
        cv2.imwrite(osp.join(self.root, 'masks', 'r.png'),
                    np.full((112, 112), 128, np.uint8))
        self.assertAlmostEqual(float(OcclusionMaskDataset(self.root)[1][
            'visibility_mask'].mean()), 128 / 255, places=6)
        with self.assertRaisesRegex(DataFormatError, r"field 'mask'"):
            write_occlusion_mask_sample(self.root, 'x', img,
                                        np.full((112, 112), 2.0))

    def test_16bit_masks(self):
        # A 16-bit 0/1 PNG (cv2.imwrite of a uint16 0/1 array) was decoded with
        # IMREAD_GRAYSCALE, which shifts it to 8 bits: every pixel 0, the face
        # read as fully occluded.
        img = make_face(0, size=112)
        for name in ('a', 'b'):
            write_occlusion_mask_sample(self.root, name, img, np.ones((112, 112)))
        m = np.full((112, 112), 255, np.uint8)
        m[64:] = 0
        cv2.imwrite(osp.join(self.root, 'masks', 'a.png'),
                    (m > 127).astype(np.uint16))
        full16 = np.full((112, 112), 32768, np.uint16)
        full16[64:] = 0
        cv2.imwrite(osp.join(self.root, 'masks', 'b.png'), full16)
        ds = OcclusionMaskDataset(self.root)
        vis = ds[0]['visibility_mask']
        self.assertEqual(vis.dtype, np.float32)
        self.assertEqual(float(vis[:64].min()), 1.0)
        self.assertEqual(float(vis[64:].max()), 0.0)
        vis = ds[1]['visibility_mask']  # 0..65535 keeps its scale
        self.assertAlmostEqual(float(vis[:64].mean()), 32768 / 65535, places=6)
        self.assertEqual(float(vis[64:].max()), 0.0)
        # The array helper: 0/1 of every integer dtype, 0..65535 for uint16.
        for dt in (np.uint8, np.uint16, np.int32, np.int64):
            np.testing.assert_array_equal(
                mask_to_visibility(np.array([[0, 1]], dt)), [[0.0, 1.0]])
        np.testing.assert_allclose(
            mask_to_visibility(np.array([[0, 65535, 257]], np.uint16)),
            [[0.0, 1.0, 257 / 65535]], rtol=1e-6)
        with self.assertRaisesRegex(DataFormatError, r'0\.\.255'):
            mask_to_visibility(np.array([[0, 300]], np.int32))

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


class TestBaseFaceDataset(unittest.TestCase):

    def test_format_interface_is_abstract(self):
        from oaml_mm.datasets.base_face_dataset import BaseFaceDataset
        with self.assertRaisesRegex(TypeError, 'abstract'):
            BaseFaceDataset(lazy_init=True)


if __name__ == '__main__':
    unittest.main()
