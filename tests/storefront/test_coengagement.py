"""Often bought together: pairs from a known stream of sessions, served and exposed."""

from __future__ import annotations

from typing import Any

import pytest

from catalog.models import Product
from search.events import coengagement
from search.events.batches import EventRow, ParsedBatch
from search.events.coengagement import (
    CoEngagementPair,
    coengagement_pairs,
    coengagement_refresh,
    often_bought_together,
)
from search.events.services import event_batch_store
from search.models import PublishableKey
from tests.search.catalog import Catalog
from tests.storefront.conftest import page_client


def _session(session_id: str, *engagements: tuple[str, str]) -> None:
    rows = [
        EventRow(type=kind, surface="product_page", sku=sku, query="", results_count=None,
                 position=None, model_key="")
        for kind, sku in engagements
    ]  # fmt: skip
    event_batch_store(
        batch=ParsedBatch(session_id=f"{session_id:0<20}", rows=rows, rejected=[]), source="test"
    )


@pytest.fixture
def paired(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> dict[str, Product]:
    """A, B, C, D, E: five products of the catalog and a known stream of sessions."""
    # The catalog has 30 products: a crawler's session is one over 10 here (50 in use).
    monkeypatch.setattr(coengagement, "MAX_PRODUCTS_PER_SESSION", 10)
    a, b, c, d, e = (catalog.products[sku] for sku in list(catalog.products)[:5])
    _session("s1", ("view", a.sku), ("add_to_cart", b.sku))
    _session("s2", ("click", a.sku), ("purchase", b.sku), ("view", c.sku))
    _session("s3", ("view", a.sku), ("view", c.sku))
    _session("s4", ("view", d.sku))
    _session("s5", ("add_to_cart", a.sku), ("add_to_cart", b.sku), ("impression", e.sku))
    # A crawler's session touches everything: it pairs nothing.
    _session("crawler", *[("view", sku) for sku in catalog.products])
    _session("s6", ("impression", a.sku), ("impression", e.sku))  # shown, not chosen
    _session("s7", ("impression", a.sku), ("impression", e.sku))
    coengagement_refresh()
    return {"A": a, "B": b, "C": c, "D": d, "E": e}


def test_pairs_weigh_the_weaker_engagement_of_each_shared_session(
    paired: dict[str, Product],
) -> None:
    a, b, c = paired["A"], paired["B"], paired["C"]
    # A-B: s1 min(1, 3) + s2 min(1, 5) + s5 min(3, 3) = 5 over 3 sessions; A-C: 1 + 1 over 2.
    # B-C share one session only (s2), under the 2-session floor; impressions pair nothing.
    assert coengagement_pairs() == [
        CoEngagementPair(min(a.pk, b.pk), max(a.pk, b.pk), 5.0, 3),
        CoEngagementPair(min(a.pk, c.pk), max(a.pk, c.pk), 2.0, 2),
    ]


def test_often_bought_together_ranks_partners_by_weight(paired: dict[str, Product]) -> None:
    results = often_bought_together(product=paired["A"], limit=8)
    assert [(hit.product.sku, hit.score) for hit in results.hits] == [
        (paired["B"].sku, 1.0),
        (paired["C"].sku, 0.4),
    ]
    assert results.model_key == "co-engagement"
    assert often_bought_together(product=paired["D"], limit=8).no_good_match


def test_a_sold_out_partner_is_left_out_unless_asked(paired: dict[str, Product]) -> None:
    Product.objects.filter(pk=paired["B"].pk).update(in_stock=False)
    skus = [h.product.sku for h in often_bought_together(product=paired["A"], limit=8).hits]
    assert skus == [paired["C"].sku]
    every = often_bought_together(product=paired["A"], limit=8, in_stock_only=False)
    assert [h.product.sku for h in every.hits] == [paired["B"].sku, paired["C"].sku]


def test_the_endpoint_serves_them_to_the_brands_pages(
    paired: dict[str, Product], publishable: PublishableKey
) -> None:
    response = page_client().get(
        f"/api/v1/products/{paired['C'].sku}/often-bought-together/?key={publishable.key}"
    )
    assert response.status_code == 200
    body = response.json()
    assert [r["product"]["sku"] for r in body["results"]] == [paired["A"].sku]
    assert body["model_key"] == "co-engagement"
    missing = page_client().get(
        f"/api/v1/products/NOPE/often-bought-together/?key={publishable.key}"
    )
    assert missing.status_code == 404


def test_a_refresh_replaces_the_pairs(paired: dict[str, Product], settings: Any) -> None:
    settings.VITRINE_COENGAGEMENT_MIN_SESSIONS = 1
    coengagement_refresh()
    pairs = {(p.product_id, p.partner_id) for p in coengagement_pairs()}
    b, c = paired["B"], paired["C"]
    assert (min(b.pk, c.pk), max(b.pk, c.pk)) in pairs
    assert len(pairs) == 3
