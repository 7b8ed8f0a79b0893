"""Periodic work of the search app (scheduled by CELERY_BEAT_SCHEDULE in settings)."""

from __future__ import annotations

from celery import shared_task

from search import services


@shared_task(acks_late=True)
def query_photos_purge() -> int:
    """Delete shoppers' query photos past their retention period; idempotent."""
    return services.query_photos_purge()


@shared_task(acks_late=True)
def vocabulary_refresh() -> bool:
    """Rebuild query understanding's vocabulary when the catalog changed; idempotent."""
    from search.vocabulary import vocabulary_rebuild_if_stale

    return vocabulary_rebuild_if_stale()


@shared_task(acks_late=True)
def search_calibration_refresh() -> str:
    """Fit the active version's search calibration when it has none or the catalog grew or
    shrank by 10% since (a new version gets its own at its first run)."""
    from embeddings.selectors import embedding_model_active
    from search.calibration import search_calibration_due, search_calibration_fit

    model = embedding_model_active()
    if model is None or not search_calibration_due(model=model):
        return "up to date"
    calibration = search_calibration_fit(model=model)
    return f"fitted {calibration.pk}"
