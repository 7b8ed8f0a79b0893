"""Who may call the API: keys (scoped, revocable, expiring), staff sessions, anonymous
search when configured; per-key throttling; CORS; one error body everywhere."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from search.models import ApiKey
from search.services import api_key_create, api_key_hash
from tests.api.conftest import api_client
from tests.search.catalog import Catalog

pytestmark = pytest.mark.django_db

PRODUCT = {"sku": "NEW-1", "title": "Linen shirt", "price": "39.90", "currency": "EUR"}


def assert_error(response: object, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.content  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


def test_calls_without_credentials_are_refused_with_401(catalog: Catalog) -> None:
    for url in ("/api/v1/products/", "/api/v1/search/text/?q=red", "/api/v1/lookbooks/"):
        response = Client().get(url)
        assert_error(response, 401, "not_authenticated")
        assert response["WWW-Authenticate"] == "Api-Key"


@pytest.mark.parametrize("header", ["Api-Key nope.nope", "Api-Key ", "Api-Key garbage"])
def test_a_wrong_key_is_refused_with_401(db: None, header: str) -> None:
    response = Client(headers={"Authorization": header}).get("/api/v1/products/")
    assert_error(response, 401, "authentication_failed")


def test_keys_are_stored_hashed_and_shown_once(db: None) -> None:
    issued = api_key_create(name="storefront")
    prefix, secret = issued.plaintext.split(".", 1)

    stored = ApiKey.objects.get()
    assert stored.prefix == prefix
    assert stored.secret_hash == api_key_hash(secret)
    assert secret not in stored.secret_hash


def test_a_read_only_key_reads_but_cannot_write(reader: Client, catalog: Catalog) -> None:
    assert reader.get("/api/v1/products/").status_code == 200
    assert reader.get("/api/v1/search/text/?q=red").status_code == 200

    response = reader.post("/api/v1/products/", PRODUCT, content_type="application/json")
    assert_error(response, 403, "permission_denied")
    response = reader.delete("/api/v1/products/RED-1/")
    assert_error(response, 403, "permission_denied")


def test_a_read_write_key_writes(writer: Client) -> None:
    response = writer.post("/api/v1/products/", PRODUCT, content_type="application/json")
    assert response.status_code == 201, response.content


def test_revoked_and_expired_keys_are_refused(db: None) -> None:
    revoked = api_key_create(name="old")
    call_command("api_keys", "revoke", revoked.api_key.prefix)
    expired = api_key_create(name="temp", expires_at=timezone.now() - timedelta(seconds=1))
    current = api_key_create(name="now", expires_at=timezone.now() + timedelta(days=1))

    assert_error(api_client(revoked.plaintext).get("/api/v1/products/"), 401,
                 "authentication_failed")  # fmt: skip
    assert_error(api_client(expired.plaintext).get("/api/v1/products/"), 401,
                 "authentication_failed")  # fmt: skip
    assert api_client(current.plaintext).get("/api/v1/products/").status_code == 200


def test_api_keys_command_creates_lists_and_revokes(
    db: None, capsys: pytest.CaptureFixture[str]
) -> None:
    call_command("api_keys", "create", "storefront", "--scope", "read_write",
                 "--expires-in-days", "30")  # fmt: skip
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert api_client(key).post("/api/v1/products/", PRODUCT,
                                content_type="application/json").status_code == 201  # fmt: skip

    call_command("api_keys", "list")
    listing = capsys.readouterr().out
    assert "storefront" in listing and "read_write" in listing and "usable" in listing
    assert key.split(".")[1] not in listing

    call_command("api_keys", "revoke", key.split(".")[0])
    assert api_client(key).get("/api/v1/products/").status_code == 401


def test_staff_sessions_may_read_and_write_but_other_users_may_not(db: None) -> None:
    staff = User.objects.create_user("merch", password="x", is_staff=True)
    shopper = User.objects.create_user("shopper", password="x")
    client = Client()
    client.force_login(staff)
    assert (
        client.post("/api/v1/products/", PRODUCT, content_type="application/json").status_code
        == 201
    )

    client.force_login(shopper)
    assert_error(client.get("/api/v1/products/"), 403, "permission_denied")


def test_session_writes_need_the_csrf_token(db: None) -> None:
    staff = User.objects.create_user("merch", password="x", is_staff=True)
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)

    response = client.post("/api/v1/products/", PRODUCT, content_type="application/json")

    assert_error(response, 403, "permission_denied")


def test_anonymous_search_is_allowed_only_when_configured(
    catalog: Catalog, settings: object
) -> None:
    settings.VITRINE_ANONYMOUS_SEARCH = True  # type: ignore[attr-defined]
    anonymous = Client()

    assert anonymous.get("/api/v1/search/text/?q=red").status_code == 200
    assert anonymous.get("/api/v1/products/RED-0/similar/").status_code == 200
    assert anonymous.get("/api/v1/products/RED-0/complete-the-look/").status_code == 200
    # Search only: the catalog itself and every write still need credentials.
    assert anonymous.get("/api/v1/products/").status_code == 401
    assert anonymous.post("/api/v1/products/", PRODUCT,
                          content_type="application/json").status_code == 401  # fmt: skip


def test_each_key_is_throttled_on_its_own(catalog: Catalog) -> None:
    slow = api_key_create(name="slow", rate="3/min").plaintext
    fast = api_key_create(name="fast").plaintext

    statuses = [api_client(slow).get("/api/v1/search/text/?q=red").status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]
    error = assert_error(api_client(slow).get("/api/v1/products/"), 429, "throttled")
    assert error["details"]["retry_after_seconds"] > 0  # type: ignore[index]
    assert api_client(fast).get("/api/v1/products/").status_code == 200


def test_cors_allows_only_listed_origins(reader: Client, settings: object) -> None:
    settings.CORS_ALLOWED_ORIGINS = ["https://shop.example.com"]  # type: ignore[attr-defined]

    allowed = reader.get("/api/v1/products/", headers={"Origin": "https://shop.example.com"})
    other = reader.get("/api/v1/products/", headers={"Origin": "https://evil.example.net"})
    preflight = Client().options(
        "/api/v1/search/text/",
        headers={"Origin": "https://shop.example.com", "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"},
    )  # fmt: skip

    assert allowed["Access-Control-Allow-Origin"] == "https://shop.example.com"
    assert "Access-Control-Allow-Origin" not in other
    assert "authorization" in preflight["Access-Control-Allow-Headers"]


def test_unknown_objects_get_the_same_error_body(reader: Client) -> None:
    assert_error(reader.get("/api/v1/products/NOPE/"), 404, "not_found")
    assert_error(reader.get("/api/v1/lookbooks/nope/"), 404, "not_found")


def test_an_unknown_api_url_gets_the_json_error_body(db: None) -> None:
    response = Client().get("/api/v1/no-such-endpoint/")

    body = assert_error(response, 404, "not_found")
    assert "/api/v1/no-such-endpoint/" in str(body)
