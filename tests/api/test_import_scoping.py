"""Import jobs through the API belong to the key that started them."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from catalog.services.jobs import import_job_create
from search.models import ApiKey
from search.services import api_key_create
from tests.api.conftest import api_client

pytestmark = pytest.mark.django_db


def _start(client: Client, url: str) -> int:
    response = client.post("/api/v1/imports", {"url": url}, content_type="application/json")
    assert response.status_code == 202, response.content
    return int(response.json()["id"])


def test_a_key_reads_only_the_import_jobs_it_started(writer: Client, db: Any) -> None:
    other = api_client(api_key_create(name="other-pim", scope=ApiKey.Scope.READ_WRITE).plaintext)
    mine = _start(writer, "https://feeds.example/mine.csv")
    theirs = _start(other, "https://feeds.example/secret-token/theirs.csv")
    from_cli = import_job_create(
        kind="url", source="https://feeds.example/cli.csv", dispatch=False
    ).id

    listed = writer.get("/api/v1/imports").json()
    assert [job["id"] for job in listed] == [mine]
    assert "secret-token" not in writer.get("/api/v1/imports").content.decode()
    for job_id in (theirs, from_cli):
        assert writer.get(f"/api/v1/imports/{job_id}").status_code == 404
        assert writer.get(f"/api/v1/imports/{job_id}/errors.csv").status_code == 404
    assert writer.get(f"/api/v1/imports/{mine}").status_code == 200
    assert writer.get(f"/api/v1/imports/{mine}/errors.csv").status_code == 200

    User.objects.create_user("merch", password="pw-123456789", is_staff=True)
    staff = Client()
    staff.login(username="merch", password="pw-123456789")
    assert {job["id"] for job in staff.get("/api/v1/imports").json()} == {mine, theirs, from_cli}
    assert staff.get(f"/api/v1/imports/{theirs}").status_code == 200


def test_a_read_only_key_may_not_touch_imports(writer: Client, reader: Client) -> None:
    job_id = _start(writer, "https://feeds.example/mine.csv")
    for path in (
        "/api/v1/imports",
        f"/api/v1/imports/{job_id}",
        f"/api/v1/imports/{job_id}/errors.csv",
    ):
        response = reader.get(path)
        assert response.status_code == 403, path
        assert response.json()["error"]["code"] == "permission_denied"
