"""SynthFace: the embedded synthetic face data set (identities, occluders, all formats).

No face data can be downloaded where oaml_mm is developed and demonstrated, so SynthFace
draws its own: identities with fixed face parameters, per-image nuisance, occluders with
exact visibility masks, written as insightface RecordIO, verification ``.bin`` files, an
occlusion-mask set and a mini IJB-C.
``tools/dataset_converters/make_synthface.py`` is its command line;
``docs/synthface.md`` describes the layout.
"""
from .generator import (CALIB_OCCLUSION_MIX, HELDOUT_OCCLUSION_MIX,
                        MASKED_PROBE_TYPES, TRAIN_OCCLUSION_MIX,
                        VAL_OCCLUSION_MIX, SynthFaceConfig, contact_sheet,
                        heldout_contact_sheet)
from .heldout import (FACE_STYLES, HELDOUT_OCCLUDERS, HELDOUT_OCCLUSION_TYPES,
                      restyle_identity)
from .identity import (FaceIdentity, identity_distance, identity_vector,
                       sample_identities, sample_identity, stream_rng)
from .occluders import OCCLUDERS, OCCLUSION_TYPES
from .render import (ARCFACE_TEMPLATE, Nuisance, RenderedFace, encode_jpeg,
                     render_face, sample_nuisance, similarity_transform)
from .writer import (MANIFEST, SYNTHFACE_VERSION, build_pairs, code_hash,
                     generate_synthface, manifest_matches, read_manifest)

__all__ = [
    'FaceIdentity', 'sample_identity', 'sample_identities', 'identity_vector',
    'identity_distance', 'stream_rng', 'Nuisance', 'RenderedFace', 'sample_nuisance',
    'render_face', 'encode_jpeg', 'similarity_transform',
    'ARCFACE_TEMPLATE', 'OCCLUDERS', 'OCCLUSION_TYPES', 'SynthFaceConfig',
    'TRAIN_OCCLUSION_MIX', 'VAL_OCCLUSION_MIX', 'MASKED_PROBE_TYPES', 'contact_sheet',
    'generate_synthface', 'read_manifest', 'manifest_matches', 'build_pairs',
    'MANIFEST', 'SYNTHFACE_VERSION', 'code_hash', 'HELDOUT_OCCLUDERS',
    'HELDOUT_OCCLUSION_TYPES', 'HELDOUT_OCCLUSION_MIX', 'CALIB_OCCLUSION_MIX',
    'FACE_STYLES', 'restyle_identity', 'heldout_contact_sheet'
]
