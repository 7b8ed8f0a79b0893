"""Periodic work of the search app (scheduled by CELERY_BEAT_SCHEDULE in settings)."""

from __future__ import annotations

from celery import shared_task

from embeddings.selectors import embedding_model_active
from search import services
from search.calibration import search_calibration_due, search_calibration_fit
from search.events import coengagement
from search.events import services as event_services
from search.vocabulary import vocabulary_rebuild_if_stale


@shared_task(acks_late=True)
def query_photos_purge_task() -> int:
    """Delete shoppers' query photos past their retention period; idempotent."""
    return services.query_photos_purge()


@shared_task(acks_late=True)
def vocabulary_refresh_task() -> bool:
    """Rebuild query understanding's vocabulary when the catalog changed; idempotent."""
    return vocabulary_rebuild_if_stale()


@shared_task(acks_late=True)
def search_calibration_refresh_task() -> str:
    """Fit the active version's search calibration when it has none or the catalog grew or
    shrank by 10% since (a new version gets its own at its first run)."""
    model = embedding_model_active()
    if model is None or not search_calibration_due(model=model):
        return "up to date"
    calibration = search_calibration_fit(model=model)
    return f"fitted {calibration.pk}"


@shared_task(acks_late=True)
def event_partitions_maintain_task() -> dict[str, list[str]]:
    """Create the next months' event partitions, drop expired ones; idempotent."""
    changes = event_services.event_partitions_maintain()
    return {"created": changes.created, "dropped": changes.dropped}


@shared_task(acks_late=True)
def coengagement_refresh_task() -> int:
    """Recompute the "often bought together" pairs from recent sessions; idempotent."""
    return coengagement.coengagement_refresh()
