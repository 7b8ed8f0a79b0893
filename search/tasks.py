"""Periodic work of the search app (scheduled by CELERY_BEAT_SCHEDULE in settings)."""

from __future__ import annotations

from celery import shared_task

from search import services


@shared_task(acks_late=True)
def query_photos_purge() -> int:
    """Delete shoppers' query photos past their retention period; idempotent."""
    return services.query_photos_purge()
