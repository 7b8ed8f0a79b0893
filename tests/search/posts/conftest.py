"""Fixtures for shoppable posts: the search catalog (real default model, pgvector), API
clients, a logged-in merchandiser and the local image server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.api.conftest import read_key, reader  # noqa: F401  (pytest finds fixtures by name)
from tests.ingest.conftest import http_server, media_for_local_fetches  # noqa: F401
from tests.search.conftest import (  # noqa: F401
    _fresh_throttle_counts,
    catalog,
    encoded_catalog,
)


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> Path:
    return media_for_local_fetches(settings, tmp_path, deadline=3)


@pytest.fixture
def merch(db: None) -> Client:
    user = User.objects.create_superuser("merch", "merch@example.com", "secret-pass-123")
    client = Client()
    client.force_login(user)
    return client
