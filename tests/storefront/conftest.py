"""Fixtures for the brand's-site features: publishable keys, events, a clean event table."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from search.experiments.assignment import experiment_cache_clear
from search.models import PublishableKey
from search.storefront.keys import publishable_key_create, publishable_keys_forget

# The search catalog (30 products with real default-model vectors) serves these tests too.
from tests.search.conftest import (  # noqa: F401  (pytest finds fixtures by name)
    _fresh_throttle_counts,
    catalog,
    encoded_catalog,
)

BRAND_ORIGIN = "https://www.brand.example"


@pytest.fixture
def publishable(db: Any) -> PublishableKey:
    return publishable_key_create(name="brand.example", allowed_origins=[BRAND_ORIGIN])


def page_client(origin: str | None = BRAND_ORIGIN) -> Client:
    """A client that calls as a page on `origin` would (the browser adds Origin)."""
    return Client(headers={"Origin": origin} if origin else {})


@pytest.fixture(autouse=True)
def _no_stale_caches() -> Iterator[None]:
    """Per-process caches of the running experiment and of publishable keys: each test's
    rows are new (and rolled back after it)."""
    experiment_cache_clear()
    publishable_keys_forget()
    yield
    experiment_cache_clear()
    publishable_keys_forget()


def events_truncate() -> None:
    """The event table is unmanaged (partitioned by SQL), so Django's flush between
    transactional tests leaves it alone: tests that commit events empty it themselves."""
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE search_event")


def events_count(**where: Any) -> int:
    from search.models import Event

    return Event.objects.filter(**where).count()
