"""Exceptions of the model package (no torch import, so callers can catch them cheaply)."""

from __future__ import annotations


class ModelLoadError(Exception):
    """A model spec could not be turned into a working model.

    The message names the spec and the file or architecture at fault, so an operator can
    fix the registry row or the file without reading a traceback.
    """


class DatasetError(Exception):
    """A dataset directory is missing files or holds rows that cannot be read."""
