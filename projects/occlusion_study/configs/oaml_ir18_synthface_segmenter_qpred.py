# OAML with the frozen OcclusionSegmenter
# (configs/synthface/oaml_ir18_synthface_segmenter.py) whose QAConv losses train on
# the frozen segmenter's own prediction (the map QAConv reads at test time)
# instead of the main batch's gated true masks (train_cfg.qaconv_train_vis='gt').
# At test time QAConv reads the segmenter's calibrated map, as in the base config.
# The study's question (visibility_predictors.md §12): does training QAConv on
# true masks make it worse on occluded pairs whatever map it is given at test time?
_base_ = ['../../../configs/synthface/oaml_ir18_synthface_segmenter.py']
model = dict(train_cfg=dict(qaconv_train_vis='pred'))
