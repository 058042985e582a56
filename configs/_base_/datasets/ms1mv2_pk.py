# MS1MV2 (insightface `faces_emore`: train.rec / train.idx / property) with P x K
# batches and the original OAML training augmentation: AdaFace's augmenter, medical
# masks on half of the faces, flip. Layout and overrides: docs/data_layout.md.
data_root = 'data/faces_emore'
train_num_classes = 85742
# Per GPU; 4 GPUs x 128 = 512, the AdaFace recipe's total batch.
train_batch_size = 128

train_pipeline = [
    dict(type='FaceAugmenter', crop_prob=0.2, low_res_prob=0.2,
         photometric_prob=0.2),
    dict(type='MedicalMaskOcclusion', prob=0.5),
    dict(type='FaceRandomFlip', prob=0.5),
    dict(type='PackFaceInputs'),
]
train_dataloader = dict(
    batch_size=train_batch_size,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    # PKSampler must be told the DataLoader's batch size (P = batch / K).
    sampler=dict(type='PKSampler', batch_size=train_batch_size,
                 num_instances=4),
    dataset=dict(
        type='MXFaceDataset',
        data_root=data_root,
        num_classes=train_num_classes,
        pipeline=train_pipeline))
