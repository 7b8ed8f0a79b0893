"""A/B tests: the statistics, per-arm results from a known stream, arms applied to search,
stop and promote."""

from __future__ import annotations

import math
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from search import selectors
from search.experiments import services
from search.experiments.assignment import experiment_arm
from search.experiments.selectors import (
    experiment_results,
    rate_difference,
    sessions_needed_per_arm,
    wilson_interval,
)
from search.models import Event, Experiment, PublishableKey
from tests.search.catalog import Catalog
from tests.storefront.conftest import page_client


def test_wilson_intervals_match_published_values() -> None:
    # Wilson (1927) / Newcombe (1998) table: 0/10 -> 0-0.2775, 5/10 -> 0.2366-0.7634.
    empty, half = wilson_interval(0, 10), wilson_interval(5, 10)
    assert (round(empty.low, 4), round(empty.high, 4)) == (0.0, 0.2775)
    assert (round(half.low, 4), round(half.high, 4)) == (0.2366, 0.7634)


def test_sample_size_matches_the_textbook_formula() -> None:
    # 5% -> 5.5% (+10%), two-sided 5%, power 80%: about 31,200 per arm (Fleiss, without
    # continuity correction); 10% -> 20%: about 200.
    assert 31_000 < sessions_needed_per_arm(baseline=0.05, relative_lift=0.1) < 31_500
    assert 190 < sessions_needed_per_arm(baseline=0.10, relative_lift=1.0) < 205


def _arm_sessions(experiment: Experiment, arm: str, count: int) -> list[str]:
    """`count` session ids that the hash puts in `arm`."""
    found, n = [], 0
    while len(found) < count:
        session = f"session-{arm}-{n:012d}"
        if experiment_arm(experiment=experiment, session_id=session) == arm:
            found.append(session)
        n += 1
    return found


def _stream(experiment: Experiment, arm: str, *, sessions: int, clicked: int, carted: int) -> None:
    rows = []
    for index, session in enumerate(_arm_sessions(experiment, arm, sessions)):
        common = {"session_id": session, "experiment_id": experiment.pk, "arm": arm,
                  "source": "test", "received_at": experiment.started_at, "surface": "similar",
                  "sku": "X"}  # fmt: skip
        rows += [Event(type="impression", **common), Event(type="impression", **common)]
        if index < clicked:
            rows.append(Event(type="click", **common))
        if index < carted:
            rows.append(Event(type="add_to_cart", **common))
    # A click from a session that never saw a surface is not a click-through.
    rows.append(Event(type="click", session_id="no-exposure-session-1", experiment_id=experiment.pk,
                      arm=arm, source="test", received_at=experiment.started_at,
                      surface="similar", sku="X"))  # fmt: skip
    Event.objects.bulk_create(rows)


def test_results_per_arm_from_a_known_stream(db: Any) -> None:
    experiment = services.experiment_start(name="diversify", b_diversify=False)
    _stream(experiment, "a", sessions=100, clicked=10, carted=4)
    _stream(experiment, "b", sessions=100, clicked=20, carted=5)
    results = experiment_results(experiment=experiment)
    a, b = results.arms
    assert (a.sessions, a.ctr.successes, a.atc.successes) == (100, 10, 4)
    assert (b.sessions, b.ctr.successes, b.atc.successes) == (100, 20, 5)
    assert results.ctr_difference is not None
    # Two-proportion z-test by hand: pooled 0.15, se sqrt(.15 * .85 * 2 / 100), z = 0.1 / se.
    z = 0.1 / math.sqrt(0.15 * 0.85 * 2 / 100)
    p = math.erfc(z / math.sqrt(2))
    assert results.ctr_difference.p_value == pytest.approx(p, abs=1e-9)
    assert results.ctr_difference.value == pytest.approx(0.1)
    assert results.ctr_difference.low < 0.1 < results.ctr_difference.high
    needed = sessions_needed_per_arm(baseline=0.1, relative_lift=0.1)
    assert results.sessions_needed_per_arm == needed
    assert (a.sessions_still_needed, b.sessions_still_needed) == (needed - 100, needed - 100)
    assert rate_difference(wilson_interval(0, 0), b.ctr) is None


def test_an_arm_must_name_a_model_version_that_can_serve(db: Any) -> None:
    with pytest.raises(services.ExperimentError, match="cannot serve"):
        services.experiment_start(name="x", b_model_key="not-a-version")
    with pytest.raises(services.ExperimentError, match="same"):
        services.experiment_start(name="x")
    services.experiment_start(name="one", b_diversify=False)
    with pytest.raises(services.ExperimentError, match="running"):
        services.experiment_start(name="two", a_diversify=False)


def test_a_sessions_search_follows_its_arm(catalog: Catalog, publishable: PublishableKey) -> None:
    experiment = services.experiment_start(name="no diversity", b_diversify=False)
    in_a = _arm_sessions(experiment, "a", 1)[0]
    in_b = _arm_sessions(experiment, "b", 1)[0]

    def ranking(words: str, flag: bool) -> list[str]:
        found = selectors.search_by_text(
            query=words, filters=selectors.SearchFilters(), limit=12, diversify=flag
        )
        return [hit.product.sku for hit in found.hits]

    # Words whose diversified and plain rankings differ, so the arm is visible in the hits
    # (photos of this catalog fall into two tight clusters, which MMR leaves in order).
    found = next(
        (
            (words, {flag: ranking(words, flag) for flag in (True, False)})
            for words in ("shirt", "red", "shoes", "blue shirt", "sneakers")
            if ranking(words, True) != ranking(words, False)
        ),
        None,
    )
    assert found is not None, "the catalog must tell the two rankings apart"
    words, expected = found

    def skus(session: str) -> tuple[str | None, list[str]]:
        response = page_client().get(
            "/api/v1/search/text/",
            {"key": publishable.key, "session": session, "q": words, "limit": 12,
             "diversify": "true"},  # the page asks for diversity; arm B overrides it
        )  # fmt: skip
        assert response.status_code == 200, response.content[:300]
        found = [r["product"]["sku"] for r in response.json()["results"]]
        return response.headers.get("X-Vitrine-Arm"), found

    assert skus(in_a) == (f"{experiment.pk}:a", expected[True])
    assert skus(in_b) == (f"{experiment.pk}:b", expected[False])
    services.experiment_stop(experiment=experiment)
    assert skus(in_b) == (None, expected[True])  # stopped: the page's own choice again


def test_stop_and_promote_from_the_admin(db: Any) -> None:
    User.objects.create_superuser("merch", "m@example.com", "pw-123456789")
    client = Client()
    client.login(username="merch", password="pw-123456789")
    experiment = services.experiment_start(name="ranking", b_diversify=False)
    url = f"/admin/search/experiment/{experiment.pk}/results/"
    page = client.get(url)
    assert page.status_code == 200
    assert b'data-arm="b"' in page.content
    client.post(url, {"action": "stop"})
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.STOPPED
    again = services.experiment_start(name="ranking 2", b_diversify=False)
    client.post(f"/admin/search/experiment/{again.pk}/results/", {"action": "promote"})
    again.refresh_from_db()
    assert again.status == Experiment.Status.PROMOTED
