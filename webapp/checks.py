"""Deploy check: the cache must be shared by every web process.

The API's throttle counts live in Django's cache. A per-process cache (what settings fall
back to with a non-Redis broker and no CACHE_URL) gives each web process its own counts, so
every rate limit is multiplied by the number of processes and resets on restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register

PER_PROCESS_CACHES = {
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
}


@register(Tags.caches, deploy=True)
def check_cache_is_shared(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    if backend not in PER_PROCESS_CACHES:
        return []
    return [
        Warning(
            f"The cache is per-process ({backend.rsplit('.', 1)[-1]}): API throttle counts are "
            "kept by each web process, so every rate limit is multiplied by the number of web "
            "processes and starts again on each restart.",
            hint=(
                "Set CACHE_URL to a Redis database of its own (redis://host:6379/1), or use a "
                "Redis broker (CELERY_BROKER_URL=redis://...): the cache then takes another "
                "database on it."
            ),
            id="vitrine.W001",
        )
    ]
