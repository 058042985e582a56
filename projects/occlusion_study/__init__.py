"""The SynthFace occlusion study: does OAML's occlusion awareness generalise?

An OpenMMLab-style project (``projects/``) beside the :mod:`oaml_mm` package: the
study's scripts, ablation configs (``configs/``), pages (``docs/``) and generated
tables (``results/``), and the run and report helpers the SynthFace demo
(``tools/demo.py``) shares with them. Run its modules from the repository root:
``python -m projects.occlusion_study.<module>``; see ``README.md``.
"""
