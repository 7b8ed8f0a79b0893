"""Read side of the analytics: every figure is a query over `search_event` for a date range.

Rates are per impression here (click-through = clicks / impressions on that surface,
add-to-cart rate = add-to-carts attributed to the surface / impressions), as the usual
retail dashboards count them; the A/B pages count per session instead (see
`search.experiments.selectors`), because a test needs independent units.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from search.models import Event


@dataclass(frozen=True)
class DateRange:
    """Whole days, both ends included, in the site's time zone."""

    first: date
    last: date

    @property
    def start(self) -> datetime:
        return timezone.make_aware(datetime.combine(self.first, time.min))

    @property
    def end(self) -> datetime:
        return timezone.make_aware(datetime.combine(self.last + timedelta(days=1), time.min))


@dataclass(frozen=True)
class QueryRow:
    query: str
    searches: int
    zero_results: int
    clicks: int

    @property
    def click_rate(self) -> float:
        """Clicks per search of these words (can exceed 1: several clicks per search)."""
        return self.clicks / self.searches if self.searches else 0.0


@dataclass(frozen=True)
class SurfaceRow:
    surface: str
    label: str
    impressions: int
    clicks: int
    add_to_carts: int

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else 0.0

    @property
    def atc_rate(self) -> float:
        return self.add_to_carts / self.impressions if self.impressions else 0.0


@dataclass(frozen=True)
class DayRow:
    day: date
    photo_searches: int
    text_searches: int


_QUERIES_SQL = """
WITH searches AS (
    SELECT lower(query) AS query, count(*) AS searches,
           count(*) FILTER (WHERE results_count = 0) AS zero_results
    FROM search_event
    WHERE type = 'search' AND surface = 'text_search' AND query <> ''
      AND received_at >= %(start)s AND received_at < %(end)s
    GROUP BY lower(query)
), clicks AS (
    SELECT lower(query) AS query, count(*) AS clicks
    FROM search_event
    WHERE type = 'click' AND surface = 'text_search' AND query <> ''
      AND received_at >= %(start)s AND received_at < %(end)s
    GROUP BY lower(query)
)
SELECT s.query, s.searches, s.zero_results, coalesce(c.clicks, 0)
FROM searches s LEFT JOIN clicks c USING (query)
WHERE %(zero_only)s = false OR s.zero_results > 0
ORDER BY CASE WHEN %(zero_only)s THEN s.zero_results ELSE s.searches END DESC, s.query
LIMIT %(limit)s
"""


def _queries(*, period: DateRange, limit: int, zero_only: bool) -> list[QueryRow]:
    parameters: dict[str, Any] = {
        "start": period.start,
        "end": period.end,
        "limit": limit,
        "zero_only": zero_only,
    }
    with connection.cursor() as cursor:
        cursor.execute(_QUERIES_SQL, parameters)
        return [QueryRow(*row) for row in cursor.fetchall()]


def analytics_top_queries(*, period: DateRange, limit: int = 25) -> list[QueryRow]:
    """The most searched words (case folded), with their zero-result searches and clicks."""
    return _queries(period=period, limit=limit, zero_only=False)


def analytics_zero_result_queries(*, period: DateRange, limit: int = 25) -> list[QueryRow]:
    """Words whose searches found nothing, most frequent first: the catalog's gaps."""
    return _queries(period=period, limit=limit, zero_only=True)


def analytics_surfaces(*, period: DateRange) -> list[SurfaceRow]:
    """Impressions, clicks and add-to-carts per surface, in the surfaces' fixed order."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT surface, count(*) FILTER (WHERE type = 'impression'), "
            "count(*) FILTER (WHERE type = 'click'), "
            "count(*) FILTER (WHERE type = 'add_to_cart') "
            "FROM search_event WHERE received_at >= %s AND received_at < %s GROUP BY surface",
            [period.start, period.end],
        )
        counts = {surface: rest for surface, *rest in cursor.fetchall()}
    shown = ("text_search", "photo_search", "similar", "complete_the_look",
             "often_bought_together", "posts")  # fmt: skip
    labels = dict(Event.Surface.choices)
    return [SurfaceRow(s, labels[s], *counts.get(s, (0, 0, 0))) for s in shown]


def analytics_searches_by_day(*, period: DateRange) -> list[DayRow]:
    """Photo and text searches per day, every day of the range (zeros included)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (received_at AT TIME ZONE %s)::date AS day, "
            "count(*) FILTER (WHERE surface = 'photo_search'), "
            "count(*) FILTER (WHERE surface = 'text_search') "
            "FROM search_event WHERE type = 'search' AND received_at >= %s AND received_at < %s "
            "GROUP BY day",
            [timezone.get_current_timezone_name(), period.start, period.end],
        )
        by_day = {day: (photo, text) for day, photo, text in cursor.fetchall()}
    days = (period.last - period.first).days + 1
    return [
        DayRow(day, *by_day.get(day, (0, 0)))
        for day in (period.first + timedelta(days=n) for n in range(days))
    ]
