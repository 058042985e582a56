# The five insightface `.bin` verification sets, each with its own dataloader and
# 10-fold VerificationMetric (FaceValLoop's list form). The files sit side by side in
# one folder (insightface ships them next to train.rec).
val_data_root = 'data/faces_emore'
val_names = ['lfw', 'cfp_fp', 'agedb_30', 'calfw', 'cplfw']
val_pipeline = [dict(type='PackFaceInputs')]
val_dataloader = [
    dict(
        batch_size=256,
        num_workers=2,
        persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(
            type='VerificationBinDataset',
            data_root=val_data_root,
            ann_file=f'{name}.bin',
            name=name,
            pipeline=val_pipeline)) for name in val_names
]
val_evaluator = [
    dict(type='VerificationMetric', dataset_name=name,
         branches=('adaface', 'qaconv', 'fused')) for name in val_names
]
# FaceValLoop binds the model to the metrics (QAConv needs its matcher) and takes
# the list of validation sets.
val_cfg = dict(type='FaceValLoop')
