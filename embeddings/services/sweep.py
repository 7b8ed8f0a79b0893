"""The embeddings sweeper (beat, and a starting worker): keep every maintained version's
vectors current, and the bundled default registered."""

from __future__ import annotations

from collections.abc import Sequence

from embeddings import selectors
from embeddings.models import EmbeddingModel
from embeddings.services.queue import SWEEP_WINDOW, embeddings_queue_fill
from embeddings.services.registry import (
    default_model_ensure,
    default_model_retry_if_installed,
    default_model_upgrade,
    embedding_models_unprepared_resend,
)


def embeddings_sweep(
    *, models: Sequence[EmbeddingModel] | None = None, window: int = SWEEP_WINDOW
) -> dict[str, int]:
    """Find products missing current vectors and queue them; return queued counts per key.

    Every maintained version (active, ready, building; the active one first and at the top
    queue priority) gets its stored progress (`backfill_done`/`backfill_total`, what the
    admin and `embedding_models list` show) refreshed and its missing or stale products
    queued. Also registers the default model on a fresh install, retries it once its
    weights appear, and re-sends a lost "prepare" message. Bounded by `window` queued
    products per version, so repeated sweeps never flood the queue.
    """
    if models is None:
        default_model_ensure()
        default_model_upgrade()
        default_model_retry_if_installed()
        embedding_models_unprepared_resend()
        models = selectors.embedding_models_maintained()
    return embeddings_queue_fill(models=models, window=window)
