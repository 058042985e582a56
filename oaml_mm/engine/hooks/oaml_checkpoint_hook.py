"""A CheckpointHook that deletes old checkpoints only after the new one is complete.

mmengine's :class:`~mmengine.hooks.CheckpointHook` with ``max_keep_ckpts=k`` removes
the oldest checkpoint *before* writing the new one. A run killed (or out of disk)
during that write is left with ``k - 1`` checkpoints, and with ``max_keep_ckpts=1``
with none at all, while ``last_checkpoint`` names the deleted file. Crash-consistent
storage keeps the old copy until the new one is durable (the write-ahead rule of
databases and of fvcore/detectron2's checkpointers): this hook saves first and prunes
afterwards. Everything else is mmengine's hook unchanged.

:class:`~oaml_mm.engine.runner.OAMLRunner` uses it in place of ``CheckpointHook``
whenever a config names ``CheckpointHook`` (the default).
"""
from collections import deque

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook

from oaml_mm.registry import HOOKS

__all__ = ['OAMLCheckpointHook']


@HOOKS.register_module()
class OAMLCheckpointHook(CheckpointHook):
    """:class:`~mmengine.hooks.CheckpointHook` that prunes after saving.

    Takes the arguments of ``CheckpointHook``::

        default_hooks = dict(
            checkpoint=dict(type='OAMLCheckpointHook', interval=1, max_keep_ckpts=2))

    With ``max_keep_ckpts=k``, ``k + 1`` checkpoints exist for the duration of a
    write, so there is always a complete one to resume from.
    """

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        keep = self.max_keep_ckpts
        stale = []
        if keep > 0:
            ids = list(getattr(self, 'keep_ckpt_ids', []))
            if not ids or ids[-1] != step:
                ids.append(step)
            stale, ids = ids[:-keep], ids[-keep:]
            self.keep_ckpt_ids = deque(ids, keep)
            # Recorded before the save, so the checkpoint itself lists its own
            # file: a run resumed from it prunes exactly like an uninterrupted
            # one (recorded after, the resumed run forgot this file for good).
            runner.message_hub.update_info('keep_ckpt_ids', list(ids))
        # The parent prunes first when max_keep_ckpts > 0; disable that for the save.
        self.max_keep_ckpts = -1
        try:
            super()._save_checkpoint_with_step(runner, step, meta)
        finally:
            self.max_keep_ckpts = keep
        if not stale or not is_main_process():
            return
        for old in stale:
            path = self.file_backend.join_path(self.out_dir,
                                               self.filename_tmpl.format(old))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):
                self.file_backend.rmtree(path)
