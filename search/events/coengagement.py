"""Co-engagement ("often bought together"): products that shoppers' sessions engaged with
together, as a recommendation source beside complete-the-look and as graph edges for
fine-tuning (`coengagement_pairs`, for the product graph).

Only choices count: product page views, clicks, add-to-carts and purchases; impressions
are what Vitrine chose to show, and counting them would teach the model its own output.
Sessions that touched more than 50 products (crawlers, compulsive browsing) are left out:
they would tie everything to everything, and their pairs grow with the square.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from catalog.models import Product
from search.models import CoEngagement
from search.selectors import SearchHit, SearchResults

#: The weight of one engagement; a pair gets, per shared session, the weaker of its two.
ENGAGEMENT_WEIGHTS = {"view": 1, "click": 1, "add_to_cart": 3, "purchase": 5}
MAX_PRODUCTS_PER_SESSION = 50
#: The `model_key` of co-engagement answers: they come from shoppers, not from a model.
SOURCE_KEY = "co-engagement"

_REFRESH_SQL = """
WITH engaged AS (
    SELECT e.session_id, p.id AS product_id,
           max(CASE e.type WHEN 'purchase' THEN %(purchase)s WHEN 'add_to_cart' THEN %(cart)s
               ELSE %(view)s END) AS weight
    FROM search_event e JOIN catalog_product p ON p.sku = e.sku
    WHERE e.received_at >= %(since)s AND e.type IN ('view', 'click', 'add_to_cart', 'purchase')
    GROUP BY e.session_id, p.id
), kept AS (
    SELECT session_id FROM engaged GROUP BY session_id
    HAVING count(*) BETWEEN 2 AND %(max_products)s
)
INSERT INTO search_coengagement (product_id, partner_id, weight, sessions, computed_at)
SELECT a.product_id, b.product_id, sum(least(a.weight, b.weight)), count(*), %(now)s
FROM engaged a
JOIN engaged b ON a.session_id = b.session_id AND a.product_id <> b.product_id
WHERE a.session_id IN (SELECT session_id FROM kept)
GROUP BY a.product_id, b.product_id
HAVING count(*) >= %(min_sessions)s
"""


def coengagement_refresh(*, now: datetime | None = None) -> int:
    """Recompute every pair from the last VITRINE_COENGAGEMENT_DAYS of events (hourly beat
    task); returns the number of rows (both directions). One transaction: readers see the
    old pairs or the new ones, never none."""
    now = now or timezone.now()
    parameters: dict[str, Any] = {
        "purchase": ENGAGEMENT_WEIGHTS["purchase"],
        "cart": ENGAGEMENT_WEIGHTS["add_to_cart"],
        "view": ENGAGEMENT_WEIGHTS["view"],
        "since": now - timedelta(days=settings.VITRINE_COENGAGEMENT_DAYS),
        "max_products": MAX_PRODUCTS_PER_SESSION,
        "min_sessions": settings.VITRINE_COENGAGEMENT_MIN_SESSIONS,
        "now": now,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM search_coengagement")
        cursor.execute(_REFRESH_SQL, parameters)
        return int(cursor.rowcount)


@dataclass(frozen=True)
class CoEngagementPair:
    """An undirected edge of the product graph: `product_id` < `partner_id`."""

    product_id: int
    partner_id: int
    weight: float
    sessions: int


def coengagement_pairs(*, min_sessions: int = 1) -> list[CoEngagementPair]:
    """Every co-engaged pair once, heaviest first: neighbour edges fine-tuning can use
    beside the lookbooks' (weights are comparable within one call, not across refreshes)."""
    rows = (
        CoEngagement.objects.filter(product_id__lt=F("partner_id"), sessions__gte=min_sessions)
        .order_by("-weight", "product_id", "partner_id")
        .values_list("product_id", "partner_id", "weight", "sessions")
    )
    return [CoEngagementPair(*row) for row in rows]


def often_bought_together(
    *, product: Product, limit: int, in_stock_only: bool = True
) -> SearchResults:
    """The products most co-engaged with this one. Scores are the weight relative to the
    strongest partner (1.0 = as strong as the best), not cosine similarities."""
    partners = CoEngagement.objects.filter(product=product).select_related("partner")
    if in_stock_only:
        partners = partners.filter(partner__in_stock=True)
    rows = list(partners.order_by("-weight", "-sessions", "partner_id")[:limit])
    if not rows:
        return SearchResults(hits=[], no_good_match=True, model_key=SOURCE_KEY)
    top = rows[0].weight
    ids = [row.partner_id for row in rows]
    products = Product.objects.prefetch_related("images").in_bulk(ids)
    hits = [SearchHit(product=products[row.partner_id], score=row.weight / top) for row in rows]
    return SearchResults(hits=hits, no_good_match=False, model_key=SOURCE_KEY)
