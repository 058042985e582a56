# The SynthFace AdaFace baseline with its margin head sharded over 2 CPU processes
# (PartialFCHead, Partial FC: An et al., ICCVW 2021; docs/partial_fc.md): each rank
# holds 200 of the 400 class centres and scores half of its shard per step, plus every
# identity of the global batch of 2 x 16. It shows the sharded head end to end on a
# CPU machine; at 400 identities a replicated head is cheaper.
#   tools/dist_train.sh configs/synthface/adaface_ir18_pfc_2xb16_synthface.py 2
#   python tools/test.py configs/synthface/adaface_ir18_pfc_2xb16_synthface.py \
#       work_dirs/adaface_ir18_pfc_2xb16_synthface/iter_500.pth --out pfc.json
_base_ = ['./adaface_ir18_synthface.py']
train_batch_size = 16
model = dict(
    head=dict(
        _delete_=True,
        type='PartialFCHead',
        in_channels=128,
        num_classes={{_base_.train_num_classes}},
        sample_rate=0.5,
        margin_head=dict(type='AdaFaceHead', s=16.0)))
train_dataloader = dict(batch_size=train_batch_size)
