# OAML on SynthFace with QAConv and the occlusion head on the 14x14 maps of stage 3
# (backbone map_stage=3; QAConv takes its grid, 14, from the backbone) instead of
# the 7x7 maps of stage 4; everything else is
# oaml_ir18_synthface.py. One seed-0 run (docs/synthface.md, "The candidates,
# tested"): occluded pairs +1.0 on the fused score, other occluders than a niqab
# +4.2, masked pairs -1.0, at about twice the training time on a CPU (a 196x196
# correlation per pair). Not the demo's choice.
#   python tools/train.py configs/synthface/oaml_ir18_synthface_stage3.py
_base_ = ['./oaml_ir18_synthface.py']
model = dict(
    backbone=dict(map_stage=3),
    # Stage 3 of the 0.25-wide IR-18 has 64 channels.
    neck=dict(in_channels=64),
    qaconv_head=dict(in_channels=64))
