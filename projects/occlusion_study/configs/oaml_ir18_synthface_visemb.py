# OAML on SynthFace with visibility in the global branch (docs/models.md,
# "Visibility in the global branch"): the AdaFace embedding is computed from the
# last-stage maps with each cell weighted by its visibility, so occluded cells add
# nothing to it (the idea of FROM, Qiu et al., TPAMI 2021). Everything else is
# oaml_ir18_synthface.py.
#
# Training weights the embedding by the main batch's true masks ('gt_or_pred'): every
# sample of the main batch carries one (the medical mask's where it was drawn, the
# occluded set's own for its niqab-style faces, all ones on the rest from
# PackFaceInputs); a batch without masks would fall back to the occlusion head's
# prediction. Test weights it by the predicted visibility, stretched by the same
# vis_range (0.3, 0.7) as QAConv's gate, so that a clean face is embedded exactly
# as without weighting and a confidently occluded cell is exactly zero, as the
# true masks were in training.
#   python tools/train.py \
#       projects/occlusion_study/configs/oaml_ir18_synthface_visemb.py
#   python tools/test.py \
#       projects/occlusion_study/configs/oaml_ir18_synthface_visemb.py \
#       work_dirs/oaml_ir18_synthface_visemb/iter_500.pth --out visemb.json
_base_ = ['../../../configs/synthface/oaml_ir18_synthface.py']
model = dict(
    train_cfg=dict(global_vis='gt_or_pred'),
    test_cfg=dict(global_vis=True, vis_range=(0.3, 0.7)))
