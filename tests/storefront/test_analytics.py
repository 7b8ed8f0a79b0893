"""Analytics from a known stream of events: selectors, the admin page, CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from search.analytics.selectors import (
    DateRange,
    analytics_searches_by_day,
    analytics_surfaces,
    analytics_top_queries,
    analytics_zero_result_queries,
)
from search.models import Event

DAY1, DAY2, OUTSIDE = date(2026, 12, 1), date(2026, 12, 2), date(2026, 11, 20)
PERIOD = DateRange(first=DAY1, last=date(2026, 12, 3))


def _at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def _events(day: date, count: int, **fields: Any) -> list[Event]:
    defaults = {"session_id": "s" * 20, "source": "test", "received_at": _at(day)}
    return [Event(**{**defaults, **fields}) for _ in range(count)]


@pytest.fixture
def stream(db: Any) -> None:
    search = {"type": "search", "surface": "text_search"}
    Event.objects.bulk_create(
        [
            *_events(DAY1, 2, **search, query="red dress", results_count=12),
            *_events(DAY1, 1, **search, query="red dress", results_count=0),
            *_events(DAY2, 1, **search, query="Red Dress", results_count=9),
            *_events(DAY2, 2, **search, query="linen suit", results_count=0),
            *_events(DAY1, 1, **search, query="boots", results_count=3),
            *_events(OUTSIDE, 5, **search, query="outside", results_count=0),
            *_events(DAY1, 2, type="search", surface="photo_search", results_count=8),
            *_events(DAY2, 1, type="search", surface="photo_search", results_count=0),
            *_events(DAY1, 4, type="impression", surface="text_search", sku="A", query="red dress"),
            *_events(DAY1, 1, type="click", surface="text_search", sku="A", query="red dress"),
            *_events(DAY1, 10, type="impression", surface="similar", sku="B"),
            *_events(DAY2, 2, type="click", surface="similar", sku="B"),
            *_events(DAY2, 1, type="add_to_cart", surface="similar", sku="B"),
            *_events(OUTSIDE, 50, type="impression", surface="similar", sku="B"),
        ]
    )


def test_top_queries_fold_case_and_count_zero_results_and_clicks(stream: None) -> None:
    rows = analytics_top_queries(period=PERIOD)
    assert [(r.query, r.searches, r.zero_results, r.clicks) for r in rows] == [
        ("red dress", 4, 1, 1),
        ("linen suit", 2, 2, 0),
        ("boots", 1, 0, 0),
    ]


def test_zero_result_queries_list_the_catalogs_gaps(stream: None) -> None:
    rows = analytics_zero_result_queries(period=PERIOD)
    assert [(r.query, r.zero_results) for r in rows] == [("linen suit", 2), ("red dress", 1)]


def test_rates_per_surface_are_computed_from_the_periods_events(stream: None) -> None:
    surfaces = {row.surface: row for row in analytics_surfaces(period=PERIOD)}
    similar = surfaces["similar"]
    assert (similar.impressions, similar.clicks, similar.add_to_carts) == (10, 2, 1)
    assert (similar.ctr, similar.atc_rate) == (0.2, 0.1)
    assert surfaces["text_search"].ctr == 0.25
    assert surfaces["complete_the_look"].impressions == 0


def test_photo_searches_per_day_include_empty_days(stream: None) -> None:
    days = analytics_searches_by_day(period=PERIOD)
    assert [(d.day, d.photo_searches, d.text_searches) for d in days] == [
        (DAY1, 2, 4),
        (DAY2, 1, 3),
        (date(2026, 12, 3), 0, 0),
    ]


@pytest.fixture
def staff(db: Any) -> Client:
    User.objects.create_superuser("merch", "m@example.com", "pw-123456789")
    client = Client()
    client.login(username="merch", password="pw-123456789")
    return client


def test_the_admin_page_shows_the_figures_and_a_range_narrows_them(
    stream: None, staff: Client
) -> None:
    page = staff.get("/admin/search/experiment/analytics/?first=2026-12-01&last=2026-12-03")
    assert page.status_code == 200
    html = page.content.decode()
    assert "linen suit" in html
    assert "outside" not in html
    assert "<svg" in html
    assert '<tr data-surface="similar"><td>Similar items</td><td class="num">10</td>' in html
    narrowed = staff.get("/admin/search/experiment/analytics/?first=2026-12-02&last=2026-12-02")
    assert '<tr data-surface="similar"><td>Similar items</td><td class="num">0</td>' in (
        narrowed.content.decode()
    )


def test_csv_exports_hold_the_same_figures(stream: None, staff: Client) -> None:
    base = "/admin/search/experiment/analytics/?first=2026-12-01&last=2026-12-03&export="
    response = staff.get(base + "top_queries")
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[:2] == [
        ["query", "searches", "zero_result_searches", "clicks"],
        ["red dress", "4", "1", "1"],
    ]
    surfaces = list(csv.DictReader(io.StringIO(staff.get(base + "surfaces").content.decode())))
    similar = next(row for row in surfaces if row["surface"] == "similar")
    assert (similar["ctr"], similar["atc_rate"]) == ("0.2000", "0.1000")


def test_a_shoppers_formula_is_defused_in_the_csv(db: Any, staff: Client) -> None:
    Event.objects.bulk_create(
        _events(DAY1, 1, type="search", surface="text_search", query="=HYPERLINK(1)",
                results_count=0)
    )  # fmt: skip
    body = staff.get(
        "/admin/search/experiment/analytics/?first=2026-12-01&last=2026-12-01&export=top_queries"
    ).content.decode()
    assert "'=hyperlink(1)" in body


def test_the_page_is_for_staff_only(stream: None) -> None:
    response = Client().get("/admin/search/experiment/analytics/")
    assert response.status_code == 302
