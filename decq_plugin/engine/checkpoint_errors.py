"""Errors of checkpoint loading; each message says why and what to do."""


class CheckpointError(ValueError):
    """A checkpoint could not be used; the message says why and what to do."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


class CheckpointFormatError(CheckpointError):
    """The file is not a torch checkpoint, or not laid out as expected."""


class UnsafeCheckpointError(CheckpointError):
    """Unpickling the file needs globals, i.e. loading it could run code."""


class StateDictMismatchError(CheckpointError):
    """The checkpoint's keys or shapes do not fit the module."""
