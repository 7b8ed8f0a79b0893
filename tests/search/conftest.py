"""Fixtures for search selectors and the API: a catalog with known vectors, a fake encoder."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache

from tests.search.catalog import Catalog, catalog_create, fake_encode_image, fake_encode_text


@pytest.fixture
def fake_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Query encoding without a model: colours and colour words onto known axes."""
    monkeypatch.setattr("embeddings.runtime.encode_query_text", fake_encode_text)
    monkeypatch.setattr("embeddings.runtime.encode_query_image", fake_encode_image)


@pytest.fixture
def catalog(db: Any, fake_encoder: None) -> Catalog:
    return catalog_create()


@pytest.fixture
def embedded_catalog(db: Any) -> Catalog:
    """The same 30 products with photos, embedded by the real default model; no fake encoder."""
    return catalog_create(real_model=True)


@pytest.fixture(autouse=True)
def _fresh_throttle_counts() -> Iterator[None]:
    """Throttle counters live in the cache: every test starts with none."""
    cache.clear()
    yield
    cache.clear()
