"""Fixtures for the page tests: a searchable test catalog and a logged-in merchandiser."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.pages.catalog_fixtures import ShopCatalog, build_catalog, patch_encoders


@pytest.fixture
def catalog(db: None, monkeypatch: pytest.MonkeyPatch, settings: Any) -> ShopCatalog:
    """Drawn products only (fast, no datasets): enough for every page state."""
    settings.VITRINE_SEARCH_MIN_SCORE_IMAGE = 0.0
    settings.VITRINE_SEARCH_MIN_SCORE_TEXT = 0.0
    built = build_catalog(use_datasets=False)
    patch_encoders(monkeypatch, built.model)
    return built


@pytest.fixture
def admin_client(db: None) -> Client:
    user = User.objects.create_superuser("merch", "merch@example.com", "secret-pass-123")
    client = Client()
    client.force_login(user)
    return client
