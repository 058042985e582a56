# SynthFace (docs/synthface.md) for the CPU demo: the original OAML training recipe
# (P x K batches, AdaFace augmenter, medical masks on half of the faces, flip), the
# niqab-style occlusion stream, and the three verification sets read with their
# true-visibility side files. Both demo models inherit this file, so they see the
# same data and the same occlusion augmentation.
# One folder holds every part, but each root variable moves only its own sections with
# --cfg-options (oaml_mm.utils.merge_cfg_options; docs/data_layout.md): data_root the
# main training stream (train/, occluded/), occlusion_data_root the occlusion stream
# (its occluded/ and its clean train/ part), val_data_root validation, test_data_root
# tools/test.py (synthface_test_bins.py). A folder elsewhere needs all four:
# data_root=DIR occlusion_data_root=DIR val_data_root=DIR test_data_root=DIR.
data_root = 'data/synthface'
occlusion_data_root = data_root
train_num_classes = 400
train_batch_size = 32

train_pipeline = [
    dict(type='FaceAugmenter', crop_prob=0.2, low_res_prob=0.2,
         photometric_prob=0.2),
    dict(type='MedicalMaskOcclusion', prob=0.5),
    dict(type='FaceRandomFlip', prob=0.5),
    dict(type='PackFaceInputs'),
]
# Recognition trains on the clean .rec set *and* the labelled occluded set (its people
# are training identities, labels.txt): 6,400 + 1,600 images. Both models see them;
# with the occluded set only in the occlusion head's stream (the original recipe for a
# niqab set without identities) neither recognizer ever sees a niqab and the two end
# level on occluded pairs (docs/synthface.md, "What moved the result").
train_dataloader = dict(
    batch_size=train_batch_size,
    # One worker: the demo trains two 1-thread models side by side on 2 cores.
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='PKSampler', batch_size=train_batch_size,
                 num_instances=4),
    dataset=dict(
        type='ConcatDataset',
        # Format descriptions differ between the parts; identities are shared.
        ignore_keys=['num_classes', 'dataset_name', 'num_images', 'format'],
        datasets=[
            dict(type='MXFaceDataset',
                 data_root=f'{data_root}/train',
                 num_classes=train_num_classes,
                 pipeline=train_pipeline),
            dict(type='OcclusionMaskDataset',
                 data_root=f'{data_root}/occluded',
                 pipeline=train_pipeline),
        ]))

# The test sets of tools/test.py are in synthface_test_bins.py, so that a test config
# can pair a model with any shipped test set (docs/data_layout.md, "Test configs").
bin_pipeline = [dict(type='PackFaceInputs')]

# Validation at the end of training (synthface_schedule.py validates only at the
# last iteration) on the calibration split val/calib.bin (3,000 pairs of identities
# seen neither in training nor in any test set; training occluders only;
# docs/synthface.md): it gives the checkpoint the same/different thresholds of
# ThresholdCalibrationHook (default_runtime.py, FAR 1e-3) and the visibility-aware
# fusion (docs/evaluation.md), so `tools/infer.py compare` decides out of the box
# and no test set is fitted on. The demo models set val_evaluator to their
# branches.
val_data_root = data_root
calibration_names = ['calib']
val_dataloader = dict(
    batch_size=128,
    num_workers=0,
    persistent_workers=False,
    # A fixed seed: without one the sampler draws it from numpy's global
    # generator when the loop is built, before the training streams draw theirs.
    sampler=dict(type='DefaultSampler', shuffle=False, seed=0),
    dataset=dict(
        type='ConcatDataset',
        ignore_keys=['dataset_name', 'num_pairs'],
        datasets=[
            dict(type='VerificationBinDataset', data_root=f'{val_data_root}/val',
                 ann_file=f'{name}.bin', name=name,
                 pipeline=bin_pipeline) for name in calibration_names
        ]))
# One forward per distinct image: the pairs reuse images (PredictionCache).
val_cfg = dict(type='FaceValLoop', progress=False, dedupe=True)
