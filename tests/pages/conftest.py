"""Fixtures for the page tests: a searchable catalog embedded by the real default model, and a
logged-in merchandiser."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.pages.catalog_fixtures import ShopCatalog, build_catalog, catalog_remove


@pytest.fixture(scope="package")
def committed_catalog(django_db_setup: None, django_db_blocker: Any) -> Iterator[ShopCatalog]:
    """Drawn products only (no datasets), embedded once for the whole package.

    Committed outside the tests' transactions (each test's writes are still rolled back),
    so the model is loaded and the products are encoded once, not once per test; it is
    deleted again when the package is done, so other packages never see it.
    """
    with django_db_blocker.unblock():
        built = build_catalog(use_datasets=False)
    yield built
    with django_db_blocker.unblock():
        catalog_remove(built)


@pytest.fixture
def catalog(db: None, committed_catalog: ShopCatalog) -> ShopCatalog:
    """The package's catalog, inside this test's transaction."""
    return committed_catalog


@pytest.fixture
def admin_client(db: None) -> Client:
    user = User.objects.create_superuser("merch", "merch@example.com", "secret-pass-123")
    client = Client()
    client.force_login(user)
    return client
