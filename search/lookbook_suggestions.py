"""Suggestions for a lookbook being edited: products like the board's items, and products
that go with them ("complete the look").

They come from the search selectors the shopper pages use. The board is what the
editor's form holds, saved or not: the page sends the products of its item rows with the
request, so a new lookbook gets suggestions too and nothing in the form is suggested
again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from catalog.models import Product
from search import selectors
from search.complete_the_look import complete_the_look

SUGGEST_SIMILAR_PER_ITEM = 8
SUGGEST_LOOK_PER_CATEGORY = 3
SUGGEST_SHOWN = 12
# Each board item costs two vector searches: suggestions are drawn from the first ones.
SUGGEST_BASIS_MAX = 24


@dataclass
class Suggestions:
    """What the panel shows: products like the board's items, and products that go with them."""

    similar: list[selectors.SearchHit] = field(default_factory=list)
    complementary: list[selectors.SearchHit] = field(default_factory=list)


def _best_per_product(hits: list[selectors.SearchHit], *, exclude: set[int]) -> list[Any]:
    best: dict[int, selectors.SearchHit] = {}
    for hit in hits:
        pid = hit.product.pk
        if pid in exclude:
            continue
        if pid not in best or hit.score > best[pid].score:
            best[pid] = hit
    return sorted(best.values(), key=lambda hit: -hit.score)[:SUGGEST_SHOWN]


def lookbook_suggestions(*, board: list[Product], exclude: set[int]) -> Suggestions:
    """Similar and complementary products for the board's products, best first.

    None of the board's products nor of `exclude` is suggested.
    """
    on_board = {product.pk for product in board} | exclude
    similar: list[selectors.SearchHit] = []
    complementary: list[selectors.SearchHit] = []
    no_filters = selectors.SearchFilters()
    for product in board[:SUGGEST_BASIS_MAX]:
        similar += selectors.similar_products(
            product=product, filters=no_filters, limit=SUGGEST_SIMILAR_PER_ITEM,
            in_stock_only=True,
        ).hits  # fmt: skip
        for group in complete_the_look(
            product=product, limit_per_category=SUGGEST_LOOK_PER_CATEGORY
        ):
            complementary += group.hits
    complementary = _best_per_product(complementary, exclude=on_board)
    shown = {hit.product.pk for hit in complementary}
    return Suggestions(
        similar=_best_per_product(similar, exclude=on_board | shown),
        complementary=complementary,
    )
