# OAML on SynthFace with visibility in the global branch (docs/models.md,
# "Visibility in the global branch"): the AdaFace embedding is computed from the
# last-stage maps with each cell weighted by its visibility, so occluded cells add
# nothing to it (the idea of FROM, Qiu et al., TPAMI 2021). Everything else is
# oaml_ir18_synthface.py.
#
# Training weights the embedding by the main batch's true masks ('gt_or_pred': the
# medical-mask augmentation gives every sample of the main batch a mask, all ones
# on clean faces; a batch without masks would fall back to the occlusion head's
# prediction). Test weights it by the predicted visibility, stretched by the same
# vis_range (0.3, 0.7) as QAConv's gate, so that a clean face is embedded exactly
# as without weighting and a confidently occluded cell is exactly zero, as the
# true masks were in training.
#   python tools/train.py configs/synthface/oaml_ir18_synthface_visemb.py
#   python tools/test.py configs/synthface/oaml_ir18_synthface_visemb.py \
#       work_dirs/oaml_ir18_synthface_visemb/iter_500.pth --out visemb.json
_base_ = ['./oaml_ir18_synthface.py']
model = dict(
    train_cfg=dict(global_vis='gt_or_pred'),
    test_cfg=dict(global_vis=True, global_vis_range=(0.3, 0.7)))
