"""Facet counts over a search's candidates: how many products each category or brand has."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection

#: The catalog columns a search can be counted by (and `facet_counts` formats into its SQL).
FACET_FIELDS = ("category", "brand")


@dataclass(frozen=True)
class FacetCount:
    value: str
    #: How many of the candidate products have this value (and the other facets' selection).
    count: int


def facet_counts(
    *,
    product_ids: Sequence[int],
    fields: Sequence[str],
    selected: dict[str, list[str]] | None = None,
) -> dict[str, list[FacetCount]]:
    """Each field's non-empty values among `product_ids` with their counts, most first.

    A field's counts take the *other* fields' `selected` values into account but not its
    own, so the shopper sees what ticking another value of the same field would add (the
    usual "OR within a field, AND across fields" of faceted search). One SQL query.
    Values with no candidate are absent; every field in `fields` is a key of the answer.
    """
    unknown = set(fields) - set(FACET_FIELDS)
    if unknown:
        raise ValueError(f"Not a facet field: {', '.join(sorted(unknown))}")
    answer: dict[str, list[FacetCount]] = {name: [] for name in fields}
    ids = list(dict.fromkeys(int(pid) for pid in product_ids))
    if not ids or not fields:
        return answer
    selected = selected or {}
    parts: list[str] = []
    params: list[Any] = []
    for name in fields:
        # Field names come from FACET_FIELDS only (checked above); values are parameters.
        where = f"p.id = ANY(%s) AND p.{name} <> ''"
        params += [name, ids]
        for other in fields:
            if other != name and selected.get(other):
                where += f" AND p.{other} = ANY(%s)"
                params.append(list(selected[other]))
        parts.append(
            f"SELECT %s::text, p.{name}, count(*) FROM catalog_product p "  # noqa: S608
            f"WHERE {where} GROUP BY p.{name}"
        )
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts), params)
        rows = cursor.fetchall()
    for name, value, count in sorted(rows, key=lambda row: (row[0], -row[2], row[1])):
        answer[name].append(FacetCount(value=str(value), count=int(count)))
    return answer
