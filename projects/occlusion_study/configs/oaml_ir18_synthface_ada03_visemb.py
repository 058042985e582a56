# OAML on SynthFace with AdaFace : QAConv 0.3 : 0.7 (oaml_ir18_synthface_ada03.py) and
# visibility in the global branch (oaml_ir18_synthface_visemb.py): the two changes of
# the occlusion study (../docs/occlusion_study.md) that helped the held-out rows at
# 1,500 iterations, together.
#   python tools/train.py \
#       projects/occlusion_study/configs/oaml_ir18_synthface_ada03_visemb.py \
#       --cfg-options train_cfg.max_iters=1500
_base_ = ['./oaml_ir18_synthface_visemb.py']
model = dict(loss_weights=dict(adaface=0.3, qaconv=0.7))
