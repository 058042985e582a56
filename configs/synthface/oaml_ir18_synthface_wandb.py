# The SynthFace OAML demo logged to Weights & Biases (project 'oaml_mm') as well as
# to the local files and TensorBoard of default_runtime.py:
#   pip install wandb && wandb login
#   python tools/train.py configs/synthface/oaml_ir18_synthface_wandb.py
# Offline: WANDB_MODE=offline python tools/train.py ... (then `wandb sync`).
# mmengine's WandbVisBackend imports wandb and calls wandb.init() only when the first
# value is logged, so this config loads and builds without wandb and without a
# network (docs/get_started.md, "Experiment tracking").
_base_ = ['./oaml_ir18_synthface.py']
vis_backends = [
    dict(type='LocalVisBackend'),
    dict(type='TensorboardVisBackend'),
    dict(type='WandbVisBackend', init_kwargs=dict(project='oaml_mm')),
]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
