# Full OAML on SynthFace: narrow IR-18 (width 0.25, 128-d) + AdaFace + QAConv +
# occlusion head, P x K batches with medical masks, the niqab-style occlusion stream.
# Same data, iterations and schedule shape as adaface_ir18_synthface.py; learning rate,
# margin warm-up, AdaFace scale and loss weights from
# projects/occlusion_study/sweep_synthface.py (its docs/synthface_sweep.md). P x K
# batches: QAConv's in-batch losses need positives.
#
# Visibility: vis_mode='gate', maps stretched by test_cfg.vis_range=(0.3, 0.7),
# occlusion-loss weight 1.0 (docs/synthface.md, "Which visibility weighting"): the
# original multiply-before-max rule stays available with
# qaconv_head.vis_mode='multiply'.
#   python tools/train.py configs/synthface/oaml_ir18_synthface.py
#   python tools/test.py configs/synthface/oaml_ir18_synthface.py \
#       work_dirs/oaml_ir18_synthface/iter_500.pth --out oaml.json
_base_ = [
    './_base_/oaml_ir18_synthface_train.py',
    './_base_/synthface_test_bins.py',
]

# tools/test.py: the three verification sets with every branch, plus the visibility
# ablation (QAConv with true / no visibility) and the occlusion head's error.
test_evaluator = [
    dict(type='VerificationMetric', dataset_name=name,
         branches=('adaface', 'qaconv', 'fused'), select_by_name=True,
         visibility_ablation=True) for name in [
        'clean', 'masked', 'occluded', 'heldout_clean', 'heldout_masked',
        'heldout_occluded'
    ]
]
