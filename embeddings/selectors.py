"""Read-side queries for embedding models and vectors."""

from __future__ import annotations

from typing import Any


def embedding_model_active() -> Any | None:
    """Return the active EmbeddingModel, or None while no model version is active.

    The registry (`EmbeddingModel`) arrives with the embedding engine; until then there is
    never an active model.
    """
    return None
