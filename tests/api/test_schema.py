"""The OpenAPI schema: served, documented, and true to the API (schemathesis, in-process)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import yaml
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.search.catalog import Catalog, lookbook_create

pytestmark = pytest.mark.django_db


def test_schema_is_served_with_interactive_docs(db: None) -> None:
    response = Client().get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)

    assert schema["openapi"].startswith("3.")
    paths = set(schema["paths"])
    assert {
        "/api/v1/products/", "/api/v1/products/{sku}/", "/api/v1/products/{sku}/similar/",
        "/api/v1/products/{sku}/complete-the-look/", "/api/v1/lookbooks/",
        "/api/v1/lookbooks/{slug}/", "/api/v1/search/text/", "/api/v1/search/image/",
    } <= paths  # fmt: skip
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"]["name"] == "Authorization"
    assert "Error" in schema["components"]["schemas"]
    assert Client().get("/api/docs/").status_code == 200


@pytest.fixture
def vitrine_schema(catalog: Catalog, write_key: str) -> Iterator[Any]:
    from webapp.wsgi import application

    lookbook_create(slug="outfit", skus=["RED-0", "BLUE-1"])
    # Called straight through WSGI, Django would close the test's connection (it is inside
    # the test transaction) at the end of each request; Django's own test Client avoids
    # that the same way.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
        # The catalog import endpoints belong to the ingestion app and have their own tests.
        yield schema.include(path_regex=r"^/api/v1/(products|lookbooks|search|posts)")
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_api_conforms_to_its_schema_with_no_server_errors(
    vitrine_schema: Any, write_key: str
) -> None:
    # Hypothesis driven by hand, operation by operation: schemathesis's pytest plugin
    # (`schema.parametrize`) does not load under this pytest version.
    headers = {"Authorization": f"Api-Key {write_key}"}
    operations = [result.ok() for result in vitrine_schema.get_all_operations()]
    assert len(operations) >= 12

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=20,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        check()
