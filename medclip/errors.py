"""Error types of the platform layer (the data layer's are in :mod:`datamodules.errors`)."""

from __future__ import annotations


class MedclipError(Exception):
    """A user-facing error: the CLI prints its message without a traceback."""


class BundleError(MedclipError):
    """A model bundle is missing files, malformed or unsafe to load."""


class UnsafeCheckpointError(BundleError):
    """A checkpoint would need pickle (arbitrary code) to load; medclip refuses it."""
