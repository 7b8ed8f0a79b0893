from __future__ import annotations

from celery import shared_task

from embeddings.selectors import embedding_model_active
from search.looks.services import lookbook_cover_vectors_refresh


@shared_task(acks_late=True)
def lookbook_cover_vectors_refresh_task() -> int:
    """Encode a batch of lookbook covers missing vectors by the active version (beat)."""
    model = embedding_model_active()
    if model is None or model.dimension is None:
        return 0
    return lookbook_cover_vectors_refresh(model=model)
