"""Weights-only checkpoints and exact resume.

mmengine's Runner puts ``HistoryBuffer`` objects and numpy values into every checkpoint;
torch >= 2.6 refuses to load those without trusting the file. This hook encodes them
into plain containers just before a checkpoint is written and decodes them right after
one is loaded, so every checkpoint a run writes loads with ``weights_only=True``
(``--resume``, ``load_from``, ``tools/test.py``, inference). It also stores the random
number generator states, so a resumed run draws the same random numbers (dropout,
augmentation in the main process) as an uninterrupted one. Validation runs after the
epoch's checkpoint is written, so it must not consume training randomness either: the
hook restores the generator states after each validation pass.
"""
import random
from typing import Optional

import numpy as np
import torch
from mmengine.hooks import Hook

from oaml_mm.registry import HOOKS
from oaml_mm.utils.checkpoint import from_weights_only, to_weights_only

__all__ = ['SafeCheckpointHook', 'get_rng_state', 'set_rng_state']


def get_rng_state() -> dict:
    """Random generator states of python, numpy and torch, as weights-only data.

    Returns:
        dict: ``{'python': tuple, 'numpy': dict, 'torch': ByteTensor, 'cuda': list}``.
    """
    np_state = np.random.get_state()
    state = {
        'python': random.getstate(),
        'numpy': {
            'name': np_state[0],
            'keys': torch.from_numpy(np_state[1].astype(np.int64)),
            'pos': int(np_state[2]),
            'has_gauss': int(np_state[3]),
            'cached_gaussian': float(np_state[4])
        },
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned.

    Args:
        state (dict): The stored states; missing entries are left alone.
    """
    if 'python' in state:
        py = state['python']
        random.setstate((py[0], tuple(py[1]), py[2]))
    if 'numpy' in state:
        s = state['numpy']
        np.random.set_state((s['name'], s['keys'].numpy().astype(np.uint32),
                             s['pos'], s['has_gauss'], s['cached_gaussian']))
    if 'torch' in state:
        torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        cuda_states = state['cuda']
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


@HOOKS.register_module()
class SafeCheckpointHook(Hook):
    """Make checkpoints loadable with ``torch.load(weights_only=True)``.

    :class:`~oaml_mm.engine.runner.OAMLRunner` adds this hook on its own; it only needs
    listing in a config when another runner is used::

        custom_hooks = [dict(type='SafeCheckpointHook')]

    Args:
        save_rng_state (bool): Store the random generator states for exact resume.
            Defaults to True.
        isolate_val_rng (bool): Restore the generator states after validation,
            so that validating (or not, after a resume) does not change what
            training draws next. Defaults to True.
    """

    # Lowest priority: encode after every other hook has added what it saves.
    priority = 'LOWEST'

    def __init__(self,
                 save_rng_state: bool = True,
                 isolate_val_rng: bool = True) -> None:
        self.save_rng_state = save_rng_state
        self.isolate_val_rng = isolate_val_rng
        self.loaded_rng_state: Optional[dict] = None
        self._train_rng_state: Optional[dict] = None

    def before_val(self, runner) -> None:
        if self.isolate_val_rng:
            self._train_rng_state = get_rng_state()

    def after_val(self, runner) -> None:
        if self._train_rng_state is not None:
            set_rng_state(self._train_rng_state)
            self._train_rng_state = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.save_rng_state:
            checkpoint['rng_state'] = get_rng_state()
        encoded = to_weights_only(checkpoint)
        checkpoint.clear()
        checkpoint.update(encoded)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        decoded = from_weights_only(checkpoint)
        checkpoint.clear()
        checkpoint.update(decoded)
        self.loaded_rng_state = checkpoint.get('rng_state')
