"""Face data sets in the formats users have, samplers and transforms."""
from .ijb import (ijb_meta_paths, read_ijb_landmarks, read_ijb_template_pairs,
                  read_ijb_tid_mid)
from .occlusion_mask_dataset import write_occlusion_mask_sample
from .recordio import (IndexedRecordReader, IndexedRecordWriter, IRHeader,
                       pack_record, unpack_record, write_insightface_rec)
from .samplers import *  # noqa: F401,F403
from .transforms import *  # noqa: F401,F403
from .verification_bin import load_verification_bin, write_verification_bin

__all__ = [
    'IRHeader', 'pack_record', 'unpack_record', 'IndexedRecordReader',
    'IndexedRecordWriter', 'write_insightface_rec', 'load_verification_bin',
    'write_verification_bin', 'write_occlusion_mask_sample', 'ijb_meta_paths',
    'read_ijb_tid_mid', 'read_ijb_template_pairs', 'read_ijb_landmarks'
]
