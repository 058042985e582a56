# OAML on SynthFace with the image-reading OcclusionSegmenter as its visibility
# predictor (docs/models.md, "Occlusion segmenter") instead of the occlusion head on
# the last-stage maps. The segmenter is trained first, on its own:
#   python tools/train.py configs/synthface/occlusion_segmenter_synthface.py
# and loaded here frozen (it never sees the identity loss; its BN statistics stay):
#   python tools/train.py configs/synthface/oaml_ir18_synthface_segmenter.py
# A trained OAML checkpoint holds the segmenter's weights, so tools/test.py,
# tools/calibrate.py and FaceRecognizer need nothing else.
#
# Everything else is oaml_ir18_synthface.py: QAConv learns on the main batch's true
# masks (train_cfg.qaconv_train_vis='gt'), so the backbone and QAConv head train as
# there; the frozen segmenter needs no occlusion stream (no DualLoaderHook).
_base_ = ['./oaml_ir18_synthface.py']
segmenter_checkpoint = \
    'work_dirs/occlusion_segmenter_synthface/iter_3000.pth'
model = dict(
    neck=dict(
        _delete_=True,
        type='OcclusionSegmenter',
        channels=(16, 32, 64, 96),
        frozen=True,
        init_cfg=dict(type='Pretrained', checkpoint=segmenter_checkpoint,
                      prefix='segmenter.')),
    train_cfg=dict(occ_on_main=False))
custom_hooks = [{{_base_.margin_warmup}}]
