"""Fixtures for search selectors and the API: a catalog embedded by the real default model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache

from tests.search.catalog import Catalog, EncodedCatalog, catalog_create, catalog_encode


@pytest.fixture(scope="session")
def encoded_catalog() -> EncodedCatalog:
    """The catalog's vectors by the bundled default model, computed once per session.

    Only numpy arrays are kept across tests: the rows are inserted again by each test, inside
    that test's transaction (see `catalog`), so no test sees another's rows or changes.
    """
    return catalog_encode()


@pytest.fixture
def catalog(db: Any, encoded_catalog: EncodedCatalog) -> Catalog:
    """30 products with photos and default-model vectors, under the active version."""
    return catalog_create(encoded=encoded_catalog)


@pytest.fixture(autouse=True)
def _fresh_throttle_counts() -> Iterator[None]:
    """Throttle counters live in the cache: every test starts with none."""
    cache.clear()
    yield
    cache.clear()
