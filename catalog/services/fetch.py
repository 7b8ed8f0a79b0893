"""What imports may fetch, from settings: feeds and images have their own caps."""

from __future__ import annotations

from django.conf import settings

from catalog.ingest.fetching import FetchPolicy, fetch_policy_from_settings

FEED_MAX_BYTES = 200 * 1024 * 1024


def fetch_policy(*, feed: bool = False) -> FetchPolicy:
    return fetch_policy_from_settings(
        allowed_hosts=settings.VITRINE_FETCH_ALLOWED_HOSTS,
        max_bytes=FEED_MAX_BYTES if feed else settings.VITRINE_FETCH_MAX_IMAGE_BYTES,
        deadline=120.0 if feed else float(settings.VITRINE_FETCH_DEADLINE_SECONDS),
    )
