"""The vector SQL search runs over pgvector: nearest products, similarities, stored vectors.

Every vector query names the model version's id, the vector kind and the dimension as
literals, with the exact expression of the contract's partial HNSW index
(`(vector::halfvec(<dim>)) <=> q` with `model_id = <id> AND kind = '<kind>'`, see
`embeddings.services.indexes`), so Postgres can use that index. Filters join
`catalog_product` inside the same query, and `hnsw.iterative_scan = relaxed_order` lets
the index keep scanning until the page is full instead of returning the few rows that
survived the filters among the first `ef_search`. Public: the search selectors, shop the
look and the benchmarks share them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection

from catalog.selectors import ProductFilters
from embeddings.models import EmbeddingModel
from embeddings.sql import halfvec_from_send, vector_literal

#: The contract's vector table (`embeddings.models.ProductEmbedding`).
EMBEDDING_TABLE = "embeddings_productembedding"


def filter_sql(filters: ProductFilters) -> tuple[str, list[Any]]:
    """SQL conditions on `p` (catalog_product) for `filters`, each prefixed with AND."""
    clauses: list[str] = []
    params: list[Any] = []
    if filters.category:
        clauses.append("p.category = ANY(%s)")
        params.append(list(filters.category))
    if filters.brand:
        clauses.append("p.brand = ANY(%s)")
        params.append(list(filters.brand))
    if filters.price_min is not None:
        clauses.append("p.price >= %s")
        params.append(filters.price_min)
    if filters.price_max is not None:
        clauses.append("p.price <= %s")
        params.append(filters.price_max)
    if filters.in_stock is not None:
        clauses.append("p.in_stock = %s")
        params.append(filters.in_stock)
    if filters.attributes:
        clauses.append("p.attributes @> %s::jsonb")
        params.append(json.dumps(filters.attributes))
    return "".join(f" AND {clause}" for clause in clauses), params


def model_dimension(model: EmbeddingModel) -> int:
    """The version's vector size, the `<dim>` of its index expression."""
    # A version answers only once prepared, and preparing records its dimension.
    assert model.dimension is not None, f"{model.key} has no dimension yet"
    return int(model.dimension)


def distance_sql(model: EmbeddingModel) -> str:
    dim = model_dimension(model)
    return f"(e.vector::halfvec({dim})) <=> %s::halfvec({dim})"


def embedding_predicate(model: EmbeddingModel, kind: str) -> str:
    # Literals, not parameters: the planner must see them to match the partial index.
    assert kind in {"image", "text", "fused"}
    return f"e.model_id = {int(model.pk)} AND e.kind = '{kind}'"


def vector_scan_settings(*, limit: int) -> str:
    """The statements that set the HNSW search for `limit` rows, for the current
    transaction only (`SET LOCAL`): a wider beam, and iterative scans for filters."""
    ef_search = min(max(int(settings.VITRINE_HNSW_EF_SEARCH), limit), 1000)
    return (
        "SET LOCAL hnsw.iterative_scan = relaxed_order; "
        f"SET LOCAL hnsw.ef_search = {int(ef_search)}; "
    )


def vector_scan_prepare(cursor: Any, *, limit: int) -> None:
    """Transaction-local HNSW settings (`vector_scan_settings`), inside a transaction."""
    cursor.execute(vector_scan_settings(limit=limit))


def nearest_products(
    *,
    model: EmbeddingModel,
    kind: str,
    vector: np.ndarray,
    filters: ProductFilters,
    limit: int,
    exclude_ids: Sequence[int] = (),
    extra_sql: str = "",
    extra_params: Sequence[Any] = (),
) -> list[tuple[int, float]]:
    """(product id, cosine similarity) of the `limit` nearest products, best first.

    `extra_sql` is more conditions on `p` (each starting with AND), for the callers here.
    """
    return nearest_products_of_kinds(
        model=model, vectors={kind: vector}, filters=filters, limit=limit,
        exclude_ids=exclude_ids, extra_sql=extra_sql, extra_params=extra_params,
    )[kind]  # fmt: skip


def nearest_products_of_kinds(
    *,
    model: EmbeddingModel,
    vectors: Mapping[str, np.ndarray],
    filters: ProductFilters,
    limit: int,
    exclude_ids: Sequence[int] = (),
    extra_sql: str = "",
    extra_params: Sequence[Any] = (),
) -> dict[str, list[tuple[int, float]]]:
    """`nearest_products` for several (kind, vector) pairs, in one round trip: each kind
    is its own index walk (a subquery on its partial index), and the HNSW settings travel
    in the same message (Postgres runs the statements of one simple query as one
    transaction, so `SET LOCAL` holds for the search and ends with it). Separately, the
    settings' transaction (BEGIN, settings, search, COMMIT) cost four round trips a kind.
    """
    where, params = filter_sql(filters)
    if exclude_ids:
        where += " AND p.id <> ALL(%s)"
        params.append(list(exclude_ids))
    where += extra_sql
    params.extend(extra_params)
    kinds = list(vectors)
    parts: list[str] = []
    values: list[Any] = []
    for number, kind in enumerate(kinds):
        # relaxed_order may return rows slightly out of order; the outer ORDER BY restores
        # it (pgvector's documented pattern), on at most `limit` rows a kind. Only literals
        # from this module are formatted in; every value is a parameter.
        parts.append(f"""
            (SELECT {number} AS kind, product_id, distance FROM (
                SELECT e.product_id, {distance_sql(model)} AS distance
                FROM {EMBEDDING_TABLE} e JOIN catalog_product p ON p.id = e.product_id
                WHERE {embedding_predicate(model, kind)}{where}
                ORDER BY {distance_sql(model)}
                LIMIT %s OFFSET 0
            ) nearest_{number})
        """)  # noqa: S608
        query = vector_literal(vectors[kind])
        values += [query, *params, query, limit]
    settings_sql = vector_scan_settings(limit=limit)
    # Several statements in one execute need Django's default client-side binding cursor
    # (psycopg's ClientCursor); `server_side_binding` in OPTIONS would refuse them.
    sql = " UNION ALL ".join(parts) + " ORDER BY kind, distance, product_id"
    with connection.cursor() as cursor:
        cursor.execute(settings_sql + sql, values)
        while cursor.description is None and cursor.nextset():
            pass  # past the settings' empty results, to the search's rows
        rows = cursor.fetchall()
    found: dict[str, list[tuple[int, float]]] = {kind: [] for kind in kinds}
    for number, product_id, distance in rows:
        found[kinds[int(number)]].append((int(product_id), 1.0 - float(distance)))
    return found


def similarities(
    *, model: EmbeddingModel, kind: str, vector: np.ndarray, product_ids: Iterable[int]
) -> dict[int, float]:
    """Cosine similarity of `vector` to each product's vector of `kind` (when it has one)."""
    return similarities_of_kinds(model=model, vectors={kind: vector}, product_ids=product_ids)[kind]


def similarities_of_kinds(
    *, model: EmbeddingModel, vectors: Mapping[str, np.ndarray], product_ids: Iterable[int]
) -> dict[str, dict[int, float]]:
    """`similarities` for several (kind, vector) pairs, in one statement."""
    ids = list(product_ids)
    kinds = list(vectors)
    found: dict[str, dict[int, float]] = {kind: {} for kind in kinds}
    if not ids or not kinds:
        return found
    parts: list[str] = []
    values: list[Any] = []
    for number, kind in enumerate(kinds):
        parts.append(
            f"SELECT {number}, e.product_id, {distance_sql(model)} FROM {EMBEDDING_TABLE} e "  # noqa: S608
            f"WHERE {embedding_predicate(model, kind)} AND e.product_id = ANY(%s)"
        )
        values += [vector_literal(vectors[kind]), ids]
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts), values)
        for number, pid, distance in cursor.fetchall():
            found[kinds[int(number)]][int(pid)] = 1.0 - float(distance)
    return found


def vectors_of(
    *, model: EmbeddingModel, kind: str, product_ids: Sequence[int]
) -> dict[int, np.ndarray]:
    """The stored vectors of `kind` for these products, as float32 arrays."""
    if not product_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT e.product_id, halfvec_send(e.vector) FROM {EMBEDDING_TABLE} e "  # noqa: S608
            f"WHERE {embedding_predicate(model, kind)} AND e.product_id = ANY(%s)",
            [list(product_ids)],
        )
        return {int(pid): halfvec_from_send(raw) for pid, raw in cursor.fetchall()}


def product_vector(*, model: EmbeddingModel, kind: str, product_id: int) -> np.ndarray | None:
    return vectors_of(model=model, kind=kind, product_ids=[product_id]).get(product_id)
