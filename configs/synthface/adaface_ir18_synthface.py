# AdaFace-only baseline on SynthFace: narrow IR-18 (width 0.25, 128-d, ~1.5M
# parameters) sized for a 2-core CPU. Same data, occlusion augmentation and number of
# iterations as oaml_ir18_synthface.py; its learning rate, margin warm-up, AdaFace scale
# and training-batch sampler come from projects/occlusion_study/sweep_synthface.py
# (projects/occlusion_study/docs/synthface_sweep.md).
#   python tools/train.py configs/synthface/adaface_ir18_synthface.py
#   python tools/test.py configs/synthface/adaface_ir18_synthface.py \
#       work_dirs/adaface_ir18_synthface/iter_500.pth --out adaface.json
_base_ = [
    './_base_/adaface_ir18_synthface_train.py',
    './_base_/synthface_test_bins.py',
]

# tools/test.py: the three verification sets (cosine branch only).
test_evaluator = [
    dict(type='VerificationMetric', dataset_name=name, branches=('adaface', ),
         select_by_name=True) for name in [
        'clean', 'masked', 'occluded', 'heldout_clean', 'heldout_masked',
        'heldout_occluded'
    ]
]
