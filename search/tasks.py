"""Periodic work of the search app (scheduled by CELERY_BEAT_SCHEDULE in settings)."""

from __future__ import annotations

from celery import shared_task

from search import services
from search.events import coengagement
from search.events import services as event_services


@shared_task(acks_late=True)
def query_photos_purge() -> int:
    """Delete shoppers' query photos past their retention period; idempotent."""
    return services.query_photos_purge()


@shared_task(acks_late=True)
def event_partitions_maintain() -> dict[str, list[str]]:
    """Create the next months' event partitions, drop expired ones; idempotent."""
    changes = event_services.event_partitions_maintain()
    return {"created": changes.created, "dropped": changes.dropped}


@shared_task(acks_late=True)
def coengagement_refresh() -> int:
    """Recompute the "often bought together" pairs from recent sessions; idempotent."""
    return coengagement.coengagement_refresh()
