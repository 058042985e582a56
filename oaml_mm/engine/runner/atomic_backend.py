"""A local file backend whose writes are atomic (temporary file, fsync, rename).

A run killed while writing a checkpoint must not leave a truncated file under the
checkpoint's name: ``--resume`` would pick it up as the latest one. A write that fails
(disk full, quota, permissions) raises :class:`~oaml_mm.errors.WorkDirError` and leaves
the file it would have replaced untouched.
"""
import os
import os.path as osp
import tempfile
from pathlib import Path
from typing import Union

from mmengine.fileio import LocalBackend, register_backend

from oaml_mm.errors import WorkDirError
from oaml_mm.utils.checkpoint import user_file_mode

__all__ = ['AtomicLocalBackend']


@register_backend('atomic_local')
class AtomicLocalBackend(LocalBackend):
    """:class:`mmengine.fileio.LocalBackend` with crash-safe ``put``.

    Used by :class:`~oaml_mm.engine.runner.OAMLRunner` for every checkpoint it writes;
    a config may also name it: ``backend_args=dict(backend='atomic_local')``.
    """

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        filepath = str(filepath)
        folder = osp.dirname(osp.abspath(filepath))
        tmp = None
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                prefix=osp.basename(filepath) + '.', suffix='.tmp', dir=folder)
            with os.fdopen(fd, 'wb') as f:
                f.write(obj)
                f.flush()
                os.fsync(f.fileno())
            # mkstemp makes 0600 files; checkpoints follow the user's umask.
            os.chmod(tmp, user_file_mode())
            os.replace(tmp, filepath)
        except BaseException as e:
            if tmp is not None and osp.exists(tmp):
                os.remove(tmp)
            if isinstance(e, OSError) and not isinstance(e, WorkDirError):
                err = WorkDirError(
                    f'{filepath}: cannot write {len(obj)} bytes '
                    f'({e.strerror or e}); nothing was written under this '
                    'name, an existing file there is unchanged')
                err.errno = e.errno
                raise err from e
            raise
