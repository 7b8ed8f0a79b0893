"""Errors the embedding services raise to their callers (admin, commands, API)."""

from __future__ import annotations


class EmbeddingModelStateError(Exception):
    """The requested life-cycle change is not allowed from the version's current state."""
