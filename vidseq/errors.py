"""Exception types: every failure a user can cause has its own type and a one-line message.

The CLI catches :class:`VidseqError` and prints ``error: <message>`` with a non-zero exit code;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class VidseqError(Exception):
    """Base class for all errors that are the user's input, not a bug."""

    exit_code = 2


class ConfigError(VidseqError):
    """A config file or override is malformed (unknown key, wrong type, bad value)."""


class SourceError(VidseqError):
    """A video source cannot be opened or read."""


class SourceNotFoundError(SourceError):
    """A path given as a source does not exist."""


class CorruptVideoError(SourceError):
    """A file exists but cannot be decoded as video."""


class EmptyVideoError(SourceError):
    """A video or image folder holds no frames."""


class InconsistentFramesError(SourceError):
    """An image folder mixes frame sizes."""


class CameraError(SourceError):
    """A webcam or stream cannot be opened."""


class WeightsNotFoundError(VidseqError):
    """Weights for a backbone or model cannot be found locally and cannot be downloaded."""


class BackboneError(VidseqError):
    """Unknown backbone name or a backbone that does not fit the contract."""


class DatasetError(VidseqError):
    """A dataset manifest or annotation file is malformed."""


class CheckpointError(VidseqError):
    """A checkpoint is missing, malformed or does not match the data given to it."""


class InputShapeError(VidseqError):
    """Array input has the wrong shape or holds NaN/inf values."""


class CaptionError(DatasetError):
    """A caption or vocabulary is unusable (empty caption, too long, malformed vocabulary data)."""


class TaskError(VidseqError):
    """A training/evaluation task name is unknown, its module is absent, or it lacks the task interface."""


class TrainingError(VidseqError):
    """Training cannot go on: empty dataset, non-finite loss, a monitored metric that is never reported."""


class SinkError(VidseqError):
    """An output cannot be written: no usable encoder, a frame of the wrong size, a row with unknown columns."""


class OutputError(SinkError):
    """An output folder cannot be created or written (read-only, no permission, not a folder, disk full)."""


class OutputLockedError(OutputError):
    """Another live run holds the lock of the same output."""
