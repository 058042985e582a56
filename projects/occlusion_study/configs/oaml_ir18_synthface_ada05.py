# OAML on SynthFace with AdaFace : QAConv 0.5 : 0.5, the next point of the occlusion
# study's loss-split ablation after oaml_ir18_synthface_ada03.py
# (../docs/occlusion_study.md, "The budget and the loss split"). Everything else is
# oaml_ir18_synthface.py.
#   python tools/train.py \
#       projects/occlusion_study/configs/oaml_ir18_synthface_ada05.py \
#       --cfg-options train_cfg.max_iters=1500
_base_ = ['../../../configs/synthface/oaml_ir18_synthface.py']
model = dict(loss_weights=dict(adaface=0.5, qaconv=0.5))
