"""Check that an output file can be written before the work that fills it."""
import os
import os.path as osp
import tempfile
from typing import Optional

from oaml_mm.errors import OutputPathError

__all__ = ['check_output_file']


def check_output_file(path: str, what: str = 'output file',
                      image: bool = False) -> None:
    """Raise unless ``path`` can be written as a file (checked up front).

    Creates missing parent folders (the writers do so anyway) and probes the folder
    with a temporary file, which also catches read-only and virtual file systems
    (``/proc``) where ``os.access`` answers yes for root. An existing file is opened
    for appending, so it is left as it was.

    Args:
        path (str): The file to be written.
        what (str): What it is, for the message (e.g. ``'--out'``).
        image (bool): The file is a picture written by OpenCV: its extension must
            be one OpenCV encodes (``cv2.haveImageWriter``); none means PNG.

    Raises:
        OutputPathError: ``path`` is a folder, its folder cannot be created or
            written, or (``image``) its extension is no image format OpenCV writes.
    """
    path = str(path)
    if not path or path.endswith(os.sep) or osp.isdir(path):
        raise OutputPathError(f'{what} {path!r} is a directory; expected a file '
                              'path (e.g. a file name inside it)')
    if image:
        import cv2
        ext = osp.splitext(path)[1].lower()
        if ext and not cv2.haveImageWriter('x' + ext):
            raise OutputPathError(
                f'{what} {path!r}: OpenCV cannot write {ext} pictures; expected '
                'an image extension such as .png or .jpg')
    folder = osp.dirname(osp.abspath(path))
    error: Optional[OSError] = None
    try:
        os.makedirs(folder, exist_ok=True)
        if osp.exists(path):
            with open(path, 'a'):
                pass
        else:
            with tempfile.NamedTemporaryFile(dir=folder, prefix='.probe-'):
                pass
    except OSError as e:
        error = e
    if error is not None:
        raise OutputPathError(f'{what} {path!r} cannot be written '
                              f'({error.strerror or error}); expected a file in a '
                              'writable folder')
