# The no-awareness control (oaml_ir18_synthface_novis.py) with AdaFace : QAConv
# 0.5 : 0.5, the control of oaml_ir18_synthface_ada05.py: "oaml AdaFace 0.5 - this"
# is what occlusion awareness earns at that loss split (../docs/occlusion_study.md).
#   python tools/train.py \
#       projects/occlusion_study/configs/oaml_ir18_synthface_novis_ada05.py \
#       --cfg-options train_cfg.max_iters=1500
_base_ = ['./oaml_ir18_synthface_novis.py']
model = dict(loss_weights=dict(adaface=0.5, qaconv=0.5))
