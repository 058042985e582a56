"""Error types of oaml_mm.

Every error raised for bad user input derives from :class:`OAMLError` and names the
file, the record or line, the field and what was expected, so a user can find the bad
byte without a debugger. Subclasses also derive from the builtin type a caller would
naturally catch (``ValueError``, ``FileNotFoundError``...), so generic handlers keep
working.
"""
from typing import Optional, Union

__all__ = [
    'OAMLError', 'DataFormatError', 'MissingFileError', 'CheckpointError',
    'UnsafeCheckpointError', 'ConfigError', 'EnvironmentCheckError',
    'NonFiniteLossError', 'GalleryError', 'ImageInputError', 'InputSizeError',
    'WorkDirError'
]


class OAMLError(Exception):
    """Base class of every error oaml_mm raises on purpose."""


class DataFormatError(OAMLError, ValueError):
    """A data file does not have the format it claims.

    Args:
        path (str): The file that is wrong.
        what (str): What was found and what was expected.
        record (int | str, optional): Record key, line number or pair index.
        field (str, optional): The field inside the record.
    """

    def __init__(self,
                 path: str,
                 what: str,
                 record: Optional[Union[int, str]] = None,
                 field: Optional[str] = None) -> None:
        self.path = str(path)
        self.record = record
        self.field = field
        self.what = what
        where = self.path
        if record is not None:
            where += f', record {record}'
        if field is not None:
            where += f', field {field!r}'
        super().__init__(f'{where}: {what}')


class MissingFileError(OAMLError, FileNotFoundError):
    """A file the data set layout requires is not there.

    Args:
        path (str): The missing file.
        hint (str): What the file is for and how to get it.
    """

    def __init__(self, path: str, hint: str = '') -> None:
        self.path = str(path)
        msg = f'{self.path}: no such file'
        if hint:
            msg += f' ({hint})'
        super().__init__(msg)


class CheckpointError(OAMLError, RuntimeError):
    """A checkpoint cannot be read or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holds objects outside the weights-only allow-list.

    Raised instead of unpickling them: loading such a file could run arbitrary code.
    """


class ConfigError(OAMLError, ValueError):
    """A config is inconsistent (a missing key, a value out of range)."""


class EnvironmentCheckError(OAMLError, ImportError):
    """An installed dependency has a version oaml_mm does not support."""


class NonFiniteLossError(OAMLError, FloatingPointError):
    """Training produced non-finite losses or gradients too many times in a row."""


class GalleryError(OAMLError, ValueError):
    """A gallery file is of another version or is damaged."""


class ImageInputError(OAMLError, ValueError):
    """An image given to the inference API cannot be used as it is."""


class InputSizeError(ImageInputError):
    """Images reaching a model have a size its fixed-size layers cannot take.

    Raised by the backbone before its layers run (e.g. 96x96 faces given to an
    IResNet built for 112x112), instead of a matrix-shape error deep inside.
    """


class WorkDirError(OAMLError, OSError):
    """The work directory cannot hold the run's logs and checkpoints.

    Raised before training starts when the folder is not writable or lacks room for
    a checkpoint, and when a checkpoint write fails (disk full); the previous complete
    checkpoint is then left untouched.
    """


class OutputPathError(OAMLError, OSError):
    """An output file cannot be written where the user asked.

    Raised before any work is done (evaluation, embedding) when the path is a
    folder, lies in a place that cannot be written, or has an extension the writer
    cannot encode; names the path and what was expected.
    """
