"""/healthz: the status for anyone, the details (versions, workers, backlog) for operators."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from search.models import ApiKey

pytestmark = pytest.mark.django_db


def test_strangers_get_the_status_only_even_claiming_to_be_local(settings: Any) -> None:
    settings.VITRINE_HEALTH_TOKEN = "s3cret-health-token"
    stranger = Client(REMOTE_ADDR="203.0.113.9")
    for headers in ({}, {"HTTP_X_FORWARDED_FOR": "127.0.0.1"}, {"HTTP_AUTHORIZATION": "Bearer x"}):
        response = stranger.get("/healthz", **headers)
        assert set(response.json()) == {"status"}, headers


def test_operators_get_the_details_and_the_backlog(settings: Any) -> None:
    settings.VITRINE_HEALTH_TOKEN = "s3cret-health-token"
    staff = User.objects.create_user("ops", password="pw-for-tests-only", is_staff=True)
    logged_in = Client(REMOTE_ADDR="203.0.113.9")
    logged_in.force_login(staff)
    callers = [
        logged_in.get("/healthz"),
        Client(REMOTE_ADDR="203.0.113.9").get(
            "/healthz", HTTP_AUTHORIZATION="Bearer s3cret-health-token"
        ),
        Client(REMOTE_ADDR="127.0.0.1").get("/healthz"),
    ]
    for response in callers:
        body = response.json()
        assert body["status"] in ("starting", "degraded")  # no model active in this test
        assert body["database"]["pgvector"] and "backlog" in body
        assert body["backlog"]["embeddings_queued"] == 0


def test_an_unknown_page_is_a_branded_404_and_the_favicon_is_found() -> None:
    response = Client().get("/no-such-page/")
    assert response.status_code == 404
    html = response.content.decode()
    assert "We could not find that page" in html and 'href="/"' in html
    assert 'rel="icon"' in html
    favicon = Client().get("/favicon.ico")
    assert favicon.status_code == 301 and favicon["Location"].endswith("favicon.svg")


def test_api_keys_are_created_in_the_admin_shown_once_and_work(settings: Any) -> None:
    admin_user = User.objects.create_superuser("root", "r@example.com", "pw-for-tests-only")
    client = Client()
    client.force_login(admin_user)
    response = client.post(
        "/admin/search/apikey/add/",
        {"name": "storefront", "scope": "read", "rate": "", "expires_at_0": "", "expires_at_1": ""},
        follow=True,
    )
    html = response.content.decode()
    plaintext = html.split("it is not shown again: ")[1].split("<")[0].strip()
    assert "." in plaintext
    api = Client(headers={"Authorization": f"Api-Key {plaintext}"})
    assert api.get("/api/v1/products/").status_code == 200
    key = ApiKey.objects.get(name="storefront")
    assert plaintext.split(".")[1] not in key.secret_hash  # only its hash is kept
    client.post(
        "/admin/search/apikey/", {"action": "revoke", "_selected_action": [key.pk]}, follow=True
    )
    assert api.get("/api/v1/products/").status_code == 401
