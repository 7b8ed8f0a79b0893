"""API fixtures: the search catalog (embedded by the real default model), API keys, clients."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from search.models import ApiKey
from search.services import api_key_create

# The ingestion tests' local HTTP server is the image host of the products API tests.
from tests.ingest.conftest import http_server  # noqa: F401  (pytest finds fixtures by name)

# The search package's catalog fixtures serve the API tests as they are.
from tests.search.conftest import (  # noqa: F401  (pytest finds fixtures by name)
    _fresh_throttle_counts,
    catalog,
    encoded_catalog,
)


def api_client(key: str | None = None) -> Client:
    """A test client that sends `Authorization: Api-Key <key>` when given one."""
    headers = {"Authorization": f"Api-Key {key}"} if key else {}
    return Client(headers=headers)


@pytest.fixture
def read_key(db: Any) -> str:
    return api_key_create(name="storefront", scope=ApiKey.Scope.READ).plaintext


@pytest.fixture
def write_key(db: Any) -> str:
    return api_key_create(name="pim-sync", scope=ApiKey.Scope.READ_WRITE).plaintext


@pytest.fixture
def reader(read_key: str) -> Client:
    return api_client(read_key)


@pytest.fixture
def writer(write_key: str) -> Client:
    return api_client(write_key)
