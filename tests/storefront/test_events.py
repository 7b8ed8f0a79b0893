"""The events endpoint: batches, consent, no personal data, partitions, capacity, arms."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from search.events.partitions import partition_name, partitions_ensure, partitions_list
from search.events.services import event_partitions_maintain
from search.experiments.assignment import experiment_arm
from search.models import Event, Experiment, PublishableKey
from search.services import api_key_create
from tests.storefront.conftest import page_client

SESSION = "s3ss10n-abcdefghijklmnop"


def _post(client: Client, key: str, body: Any, *, content_type: str = "text/plain") -> Any:
    return client.post(
        f"/api/v1/events/?key={key}", data=json.dumps(body), content_type=content_type
    )


def _batch(events: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"session_id": SESSION, "consent": True, "events": events, **extra}


CLICK = {"type": "click", "surface": "similar", "sku": "RED-1", "position": 2, "model_key": "m1"}


def test_a_batch_is_stored_whole_and_acknowledged_with_its_count(
    publishable: PublishableKey,
) -> None:
    events = [
        {"type": "search", "surface": "text_search", "query": "red dress", "results_count": 12},
        {"type": "impression", "surface": "text_search", "sku": "RED-1", "position": 0},
        CLICK,
        {"type": "add_to_cart", "surface": "similar", "sku": "RED-1"},
    ]
    response = _post(page_client(), publishable.key, _batch(events))
    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 4, "rejected": [], "experiment_id": None, "arm": ""}
    stored = list(Event.objects.order_by("id").values_list("type", "surface", "sku", "session_id"))
    assert stored == [
        ("search", "text_search", "", SESSION),
        ("impression", "text_search", "RED-1", SESSION),
        ("click", "similar", "RED-1", SESSION),
        ("add_to_cart", "similar", "RED-1", SESSION),
    ]
    click = Event.objects.get(type="click")
    assert (click.position, click.model_key, click.source) == (2, "m1", publishable.key[:32])


def test_rows_land_in_their_months_partition_not_the_default(publishable: PublishableKey) -> None:
    assert _post(page_client(), publishable.key, _batch([CLICK])).status_code == 202
    today = datetime.now(UTC).date()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {partition_name(today.replace(day=1))}")  # noqa: S608
        assert cursor.fetchone() == (1,)
        cursor.execute("SELECT count(*) FROM search_event_default")
        assert cursor.fetchone() == (0,)


def test_no_consent_no_event(publishable: PublishableKey) -> None:
    for body in (_batch([CLICK], consent=False), {"session_id": SESSION, "events": [CLICK]}):
        response = _post(page_client(), publishable.key, body)
        assert response.status_code == 400, response.content
        assert "consent" in response.json()["error"]["message"].lower(), response.content
    assert Event.objects.count() == 0


@pytest.mark.parametrize("session", ["short", "jane.doe@example.com-aaaaaaa", "", None])
def test_a_session_id_that_is_not_a_random_token_is_refused(
    publishable: PublishableKey, session: Any
) -> None:
    response = _post(page_client(), publishable.key, _batch([CLICK], session_id=session))
    assert response.status_code == 400
    assert Event.objects.count() == 0


def test_bad_rows_are_reported_one_by_one_and_the_good_ones_kept(
    publishable: PublishableKey,
) -> None:
    events = [
        CLICK,
        {**CLICK, "email": "jane@example.com"},  # personal data has no field to go to
        {"type": "purchase", "surface": "checkout", "sku": "RED-1"},  # only from the server
        {"type": "teleport", "surface": "similar", "sku": "X"},
        {"type": "click", "surface": "similar"},  # no sku
        "not an object",
        {**CLICK, "position": -1},
    ]
    response = _post(page_client(), publishable.key, _batch(events))
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 1
    assert [row["index"] for row in body["rejected"]] == [1, 2, 3, 4, 5, 6]
    assert "email" in body["rejected"][0]["error"]
    assert "server" in body["rejected"][1]["error"]
    assert Event.objects.count() == 1


def test_words_with_an_email_or_a_phone_number_are_stored_without_them(
    publishable: PublishableKey,
) -> None:
    event = {
        "type": "search", "surface": "text_search", "results_count": 0,
        "query": "order for jane.doe@example.com call +44 20 7946 0958 red dress",
    }  # fmt: skip
    assert _post(page_client(), publishable.key, _batch([event])).status_code == 202
    assert Event.objects.get().query == "order for [email] call +[number] red dress"


def test_purchases_come_from_the_brands_server_with_a_secret_key(db: Any) -> None:
    secret = api_key_create(name="brand-server").plaintext
    client = Client(headers={"Authorization": f"Api-Key {secret}"})
    purchase = {"type": "purchase", "surface": "checkout", "sku": "RED-1"}
    response = _post(client, "", _batch([purchase]), content_type="application/json")
    assert response.status_code == 202
    assert response.json()["accepted"] == 1
    assert Event.objects.get().type == "purchase"


def test_events_need_a_key_and_a_listed_origin(publishable: PublishableKey) -> None:
    assert _post(Client(), "", _batch([CLICK])).status_code in (401, 403)
    assert (
        _post(page_client("https://evil.example"), publishable.key, _batch([CLICK])).status_code
        == 403
    )
    assert Event.objects.count() == 0


def test_a_batch_too_large_is_a_413_and_too_many_events_a_400(publishable: PublishableKey) -> None:
    huge = _batch([{**CLICK, "sku": "X" * 250}] * 3000)
    assert _post(page_client(), publishable.key, huge).status_code == 413
    many = _batch([CLICK] * 501)
    assert _post(page_client(), publishable.key, many).status_code == 400
    assert Event.objects.count() == 0


def test_beyond_capacity_a_batch_is_refused_with_retry_after_and_nothing_of_it_stored(
    publishable: PublishableKey, settings: Any
) -> None:
    settings.VITRINE_EVENTS_MAX_PER_SECOND = 500
    accepted = 0
    refused = None
    for _ in range(20):
        response = _post(page_client(), publishable.key, _batch([CLICK] * 300))
        if response.status_code == 429:
            refused = response
            break
        assert response.status_code == 202
        accepted += response.json()["accepted"]
    assert refused is not None, "20 batches of 300 in a row never met a 500/s limit"
    assert 1 <= int(refused.headers["Retry-After"]) <= 2
    assert refused.json()["error"]["code"] == "events_overloaded"
    assert Event.objects.count() == accepted


def test_events_carry_the_sessions_arm_of_the_running_experiment(
    publishable: PublishableKey,
) -> None:
    experiment = Experiment.objects.create(name="diversify off", b_diversify=False)
    response = _post(page_client(), publishable.key, _batch([CLICK]))
    arm = experiment_arm(experiment=experiment, session_id=SESSION)
    assert response.json()["arm"] == arm
    assert Event.objects.get().arm == arm
    assert Event.objects.get().experiment_id == experiment.pk


def test_sessions_split_by_hash_near_the_asked_share(db: Any) -> None:
    experiment = Experiment.objects.create(name="split", b_percent=30)
    arms = [
        experiment_arm(experiment=experiment, session_id=f"session-{i:012d}") for i in range(4000)
    ]
    share = arms.count("b") / len(arms)
    assert 0.27 < share < 0.33
    assert experiment_arm(experiment=experiment, session_id="session-000000000007") == arms[7]


def test_retention_drops_whole_expired_months_and_creates_the_coming_ones(
    db: Any, settings: Any
) -> None:
    settings.VITRINE_EVENT_RETENTION_MONTHS = 3
    with connection.cursor() as cursor:
        partitions_ensure(cursor, today=date(2026, 6, 15), months_ahead=0)
        partitions_ensure(cursor, today=date(2026, 9, 15), months_ahead=0)
        cursor.execute(
            "INSERT INTO search_event (received_at, type, surface, session_id, source) "
            "VALUES ('2026-06-20', 'click', 'similar', 'x', 't'), "
            "('2026-09-20', 'click', 'similar', 'x', 't'), "
            "('2031-01-05', 'click', 'similar', 'x', 't')"
        )
    changes = event_partitions_maintain(now=datetime(2026, 12, 6, tzinfo=UTC))
    assert changes.dropped == ["search_event_y2026m06"]
    with connection.cursor() as cursor:
        months = partitions_list(cursor)
    assert "search_event_y2026m09" in months  # September is within 3 months of December
    assert {"search_event_y2027m01", "search_event_y2027m02"} <= set(months)
    assert sorted(e.received_at.year for e in Event.objects.all()) == [2026, 2031]
