"""Error types of the platform layer (the data layer's are in :mod:`datamodules.errors`)."""

from __future__ import annotations

from datamodules.errors import OutputWriteError as DataOutputWriteError


class MedclipError(Exception):
    """A user-facing error: the CLI prints its message without a traceback."""


class BundleError(MedclipError):
    """A model bundle is missing files, malformed or unsafe to load."""


class UnsafeCheckpointError(BundleError):
    """A checkpoint would need pickle (arbitrary code) to load; medclip refuses it."""


class OutputWriteError(MedclipError, DataOutputWriteError):
    """A checkpoint, bundle, index or report could not be written (disk full, quota, read-only,
    no permission); the previous version is unchanged and no temporary file is left behind.

    Also a :class:`datamodules.errors.OutputWriteError` and an :class:`OSError` (same ``errno``).
    """
