# The OAML occlusion stream: per step a second batch of 80% niqab-style occluded faces
# with ground-truth visibility masks (OcclusionMaskDataset layout, docs/datasets.md)
# and 20% clean faces from the training set with its occlusion transforms removed.
occlusion_data_root = 'data/niqab'
occlusion_pipeline = [
    dict(type='FaceRandomFlip', prob=0.5),
    dict(type='PackFaceInputs'),
]
custom_hooks = [
    dict(
        type='DualLoaderHook',
        occluded_ratio=0.8,
        # None: the main DataLoader's batch size (the original recipe's "second batch").
        batch_size=None,
        occluded_dataloader=dict(
            num_workers=2,
            dataset=dict(
                type='OcclusionMaskDataset',
                data_root=occlusion_data_root,
                pipeline=occlusion_pipeline))),
]
