# OAML with the frozen OcclusionSegmenter
# (configs/synthface/oaml_ir18_synthface_segmenter.py) and a loss-split schedule
# (docs/models.md, "Loss-split schedule"): AdaFace : QAConv
# ramps from the demo's 0.1 : 0.9 (chosen on the sweep folder at 500 iterations) to
# 0.5 : 0.5 over the run (LossWeightScheduleHook; the ramp follows the run's length),
# so that the AdaFace branch does not starve at longer budgets. A probe: the end point
# was not chosen on the sweep folder.
_base_ = ['../../../configs/synthface/oaml_ir18_synthface_segmenter.py']

custom_hooks = [
    {{_base_.margin_warmup}},
    dict(type='LossWeightScheduleHook', key='adaface', start=0.1, end=0.5,
         complement='qaconv'),
]
