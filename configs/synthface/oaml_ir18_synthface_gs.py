# OAML on SynthFace with QAConv-GS graph sampling (Liao & Shao, CVPR 2022) instead of
# random P x K batches: at each epoch start (400 anchors x 32 images = 400 iterations
# here) one image per identity is scored against all others with the model's QAConv
# matcher and every batch is an identity plus its 7 nearest identities, 4 images
# each (docs/datasets.md, "Graph sampling"). Everything else is oaml_ir18_synthface.py.
# Against the demo's P x K batches (one seed, docs/datasets.md): -3.5 fused on
# occluded pairs, -4.3 on masked pairs, +7.8 mini IJB-C TAR@FAR=1e-3.
#   python tools/train.py configs/synthface/oaml_ir18_synthface_gs.py
_base_ = ['./oaml_ir18_synthface.py']
train_dataloader = dict(
    sampler=dict(_delete_=True, type='GraphSampler',
                 batch_size={{_base_.train_batch_size}}, num_instances=4))
# The base file's hooks (a list in a config replaces the base's list) + the graph's.
# Representatives go through the training pipeline, seeded per identity.
custom_hooks = [*_base_.custom_hooks, dict(type='GraphSamplerHook', batch_size=64)]
