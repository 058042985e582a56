# The SynthFace test sets of tools/test.py: clean-clean, clean vs medical-mask/niqab
# probe, occluded-occluded, then the same three held out (style-B faces, occluder
# families training never sees; docs/synthface.md, "Held-out occluders and faces").
# One ConcatDataset, one metric per set (each keeps the samples carrying its name);
# the model configs give the metrics (their branches). --cfg-options
# test_data_root=DIR moves the sets (DIR/val).
test_data_root = 'data/synthface'
val_names = ['clean', 'masked', 'occluded']
heldout_names = ['heldout_clean', 'heldout_masked', 'heldout_occluded']
bin_dataloader = dict(
    batch_size=128,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='ConcatDataset',
        ignore_keys=['dataset_name', 'num_pairs'],
        datasets=[
            dict(type='VerificationBinDataset', data_root=f'{test_data_root}/val',
                 ann_file=f'{name}.bin', name=name, side_files=True,
                 pipeline=[dict(type='PackFaceInputs')])
            for name in val_names + heldout_names
        ]))
test_dataloader = bin_dataloader
# The .bin pairs reuse images (42,000 slots, 6,339 distinct): one forward each.
test_cfg = dict(type='FaceTestLoop', dedupe=True)
