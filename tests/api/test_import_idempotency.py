"""POST /api/v1/imports is safe to retry: an `Idempotency-Key` names one job, and a broker
that is down does not turn a job that was created into a 500 (issue 12)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import kombu.exceptions
import pytest
from django.test import Client
from django.utils import timezone

from catalog import tasks
from catalog.models import ImportJob
from catalog.services.chunks import import_sweep
from search.models import ApiKey
from search.services import api_key_create
from tests.api.conftest import api_client

pytestmark = pytest.mark.django_db

FEED = "https://feeds.example/catalog.csv"


def _post(client: Client, *, url: str = FEED, key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(
        "/api/v1/imports", {"url": url}, content_type="application/json", headers=headers
    )


def test_a_retried_import_with_the_same_idempotency_key_is_the_job_it_created(
    writer: Client,
) -> None:
    first = _post(writer, key="pim-sync-2026-12-07")
    again = _post(writer, key="pim-sync-2026-12-07")

    assert first.status_code == 202, first.content
    assert again.status_code == 202, again.content
    assert again.json()["id"] == first.json()["id"]
    assert again["Location"] == first["Location"]
    assert ImportJob.objects.count() == 1

    # Another key is another job, and so is the same key sent by another API key.
    assert _post(writer, key="pim-sync-2026-12-08").json()["id"] != first.json()["id"]
    other = api_client(api_key_create(name="other", scope=ApiKey.Scope.READ_WRITE).plaintext)
    assert _post(other, key="pim-sync-2026-12-07").json()["id"] != first.json()["id"]
    assert _post(writer).json()["id"] != _post(writer).json()["id"]  # no key: a job each
    assert ImportJob.objects.count() == 5


def test_an_idempotency_key_reused_for_another_feed_is_refused(writer: Client) -> None:
    assert _post(writer, key="nightly").status_code == 202
    reused = _post(writer, url="https://feeds.example/other.csv", key="nightly")
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert _post(writer, key="x" * 256).status_code == 400
    assert ImportJob.objects.count() == 1


def test_an_import_posted_while_the_broker_is_down_is_accepted_and_sent_by_the_sweeper(
    writer: Client, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    def broker_down(*args: Any, **kwargs: Any) -> None:
        raise kombu.exceptions.OperationalError("Error 111 connecting to redis: refused.")

    monkeypatch.setattr(tasks.import_job_parse_task, "apply_async", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        response = _post(writer, key="during-outage")

    assert response.status_code == 202, response.content
    job = ImportJob.objects.get(id=response.json()["id"])
    assert job.state == ImportJob.State.QUEUED
    # The client's retry (it may not trust a 202 sent during an outage) is the same job...
    assert _post(writer, key="during-outage").json()["id"] == job.id
    # ...and the import sweeper sends it once it has waited past its threshold.
    ImportJob.objects.filter(id=job.id).update(updated_at=timezone.now() - timedelta(hours=1))
    assert import_sweep().parse == [job.id]
