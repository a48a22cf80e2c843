"""The one error family the engine raises for bad input; the CLI turns it into one line + exit 2."""


class SpLIPError(Exception):
    """A user-facing error: the message names the bad value and how to fix it."""


class ImageDecodeError(SpLIPError):
    """An image could not be read; the message names the source and what is wrong with it."""


class PretrainedWeightsError(SpLIPError):
    """Pretrained CLIP weights could not be found or downloaded."""


class CheckpointError(SpLIPError):
    """A SpLIP checkpoint directory is missing, incomplete or does not fit the model."""


class DiskWriteError(SpLIPError):
    """A file could not be written (disk full, no permission, read-only file system); the message
    names the file, the problem and the fix. `errno` is the OSError's errno (None if unknown)."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno
