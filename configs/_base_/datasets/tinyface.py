# TinyFace closed-set identification (rank-1/5/20; docs/evaluation.md, "TinyFace"):
# native low-resolution probes against the gallery matches padded with the
# distractors, read from the release's Testing_Set/{Probe,Gallery_Match,
# Gallery_Distractor} and resized to 112x112.
test_data_root = 'data/tinyface'
test_dataloader = dict(
    batch_size=256,
    num_workers=4,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='TinyFaceDataset',
        data_root=test_data_root,
        test_dir='Testing_Set',
        pipeline=[dict(type='PackFaceInputs')]))
test_evaluator = dict(type='TinyFaceMetric', ranks=(1, 5, 20))
test_cfg = dict(type='FaceTestLoop')
