"""Test-wide settings: one torch thread per test worker (pytest -n 2 on 2 cores)."""
import os

os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('MKL_NUM_THREADS', '1')

import torch  # noqa: E402

torch.set_num_threads(1)

import oaml_mm  # noqa: E402,F401  (registers every component)
