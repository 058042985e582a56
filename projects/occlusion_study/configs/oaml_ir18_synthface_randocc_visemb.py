# OAML on SynthFace with both training-side capabilities of the occlusion study
# (../docs/occlusion_study.md): random occluders for the occlusion head and QAConv
# (oaml_ir18_synthface_randocc.py) and visibility in the global branch
# (oaml_ir18_synthface_visemb.py).
#   python tools/train.py \
#       projects/occlusion_study/configs/oaml_ir18_synthface_randocc_visemb.py
_base_ = ['./oaml_ir18_synthface_randocc.py']
model = dict(
    train_cfg=dict(global_vis='gt_or_pred'),
    test_cfg=dict(global_vis=True, vis_range=(0.3, 0.7)))
