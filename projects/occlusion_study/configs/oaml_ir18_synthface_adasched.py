# OAML on SynthFace with a loss-split schedule (docs/models.md, "Loss-split
# schedule"): AdaFace : QAConv ramps from the demo's 0.1 : 0.9 to 0.5 : 0.5 over the
# run (LossWeightScheduleHook), so that QAConv trains the feature maps early and the
# AdaFace branch does not starve at longer budgets. Everything else is
# oaml_ir18_synthface.py. Not chosen on the sweep folder yet: an option, not the demo's.
#   python tools/train.py \
#       projects/occlusion_study/configs/oaml_ir18_synthface_adasched.py
_base_ = ['../../../configs/synthface/oaml_ir18_synthface.py']

# The base file's hooks (a list in a config replaces the base's), plus the schedule.
custom_hooks = [
    {{_base_.margin_warmup}},
    dict(type='LossWeightScheduleHook', key='adaface', start=0.1, end=0.5,
         complement='qaconv'),
    {{_base_.occlusion_stream}},
]
