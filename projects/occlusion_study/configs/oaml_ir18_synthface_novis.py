# The no-awareness control of oaml_ir18_synthface.py: the same OAML model (backbone,
# AdaFace + QAConv losses, P x K batches, data, schedule) with every use of
# visibility switched off, in training and in evaluation: no occlusion head, no
# occlusion stream, QAConv trained and matched without a visibility map.
# "OAML - control" is what occlusion awareness earns; "control - fair baseline"
# (adaface_ir18_synthface.py) what the QAConv loss and P x K batches earn
# (docs/synthface.md, "Does the awareness generalise").
#   python tools/train.py \
#       projects/occlusion_study/configs/oaml_ir18_synthface_novis.py
_base_ = ['../../../configs/synthface/oaml_ir18_synthface.py']
model = dict(
    neck=None,
    train_cfg=dict(qaconv_train_vis='none', occ_on_main=False))
custom_hooks = [{{_base_.margin_warmup}}]  # as the full model
# No visibility exists to ablate or score.
test_evaluator = [
    dict(type='VerificationMetric', dataset_name=name,
         branches=('adaface', 'qaconv', 'fused'), select_by_name=True)
    for name in ['clean', 'masked', 'occluded', 'heldout_clean', 'heldout_masked',
                 'heldout_occluded']
]
