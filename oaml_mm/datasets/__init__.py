"""Face data sets in the formats users have, samplers and transforms."""
from .base_face_dataset import BaseFaceDataset, decode_image
from .face_image_folder import FaceImageFolder
from .ijb import (IJBDataset, ijb_meta_paths, read_1n_csv, read_ijb_landmarks,
                  read_ijb_template_pairs, read_ijb_tid_mid)
from .mx_face_dataset import MXFaceDataset
from .occlusion_mask_dataset import (OcclusionMaskDataset,
                                     write_occlusion_mask_sample)
from .recordio import (IndexedRecordReader, IndexedRecordWriter, IRHeader,
                       pack_record, unpack_record, write_insightface_rec)
from .samplers import *  # noqa: F401,F403
from .tinyface import TINYFACE_ROLES, TinyFaceDataset, tinyface_role_subject
from .transforms import *  # noqa: F401,F403
from .verification_bin import (VerificationBinDataset, load_verification_bin,
                               write_verification_bin)

__all__ = [
    'BaseFaceDataset', 'decode_image', 'MXFaceDataset', 'FaceImageFolder',
    'VerificationBinDataset', 'IJBDataset', 'OcclusionMaskDataset', 'PKSampler',
    'GraphSampler', 'nearest_classes', 'TinyFaceDataset', 'TINYFACE_ROLES',
    'tinyface_role_subject',
    'AlignFace5Points', 'FaceAugmenter', 'FaceRandomFlip', 'PackFaceInputs',
    'MedicalMaskOcclusion', 'RandomOcclusion', 'visibility_to_grid',
    'IRHeader', 'pack_record', 'unpack_record', 'IndexedRecordReader',
    'IndexedRecordWriter', 'write_insightface_rec', 'load_verification_bin',
    'write_verification_bin', 'write_occlusion_mask_sample', 'ijb_meta_paths',
    'read_ijb_tid_mid', 'read_ijb_template_pairs', 'read_ijb_landmarks',
    'read_1n_csv'
]
