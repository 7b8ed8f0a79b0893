"""Every response carries a Content-Security-Policy that forbids inline and foreign scripts."""

from __future__ import annotations

import re

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def _directives(header: str) -> dict[str, list[str]]:
    parts = (part.split() for part in header.split(";") if part.strip())
    return {words[0]: words[1:] for words in parts}


@pytest.mark.parametrize(
    "path", ["/", "/search/?q=red", "/admin/login/", "/api/v1/products/", "/healthz", "/nowhere/"]
)
def test_every_response_has_a_script_locking_policy(path: str) -> None:
    response = Client().get(path)
    policy = _directives(response.headers["Content-Security-Policy"])
    assert policy["script-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in policy["default-src"]


def test_api_docs_run_no_inline_script() -> None:
    """Swagger UI's start-up code is served as a file, so the policy lets it run."""
    client = Client()
    html = client.get("/api/docs/").content.decode()
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S)
    assert scripts
    assert all("src=" in attributes and not body.strip() for attributes, body in scripts)
    init_src = re.findall(r'<script src="([^"]*\?script[^"]*)"', html)
    assert init_src
    init = client.get(init_src[0].replace("&amp;", "&"))
    assert init.status_code == 200
    assert b"SwaggerUIBundle" in init.content
