"""Each version's partial HNSW indexes, one per vector kind (see docs/architecture.md)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connection

from embeddings.models import KINDS, EmbeddingModel
from embeddings.services.errors import EmbeddingModelStateError

# Two CREATE/DROP INDEX CONCURRENTLY on one table can deadlock (each waits for the other's
# transaction to end), and two workers may prepare versions at once: one lock for all of them.
_INDEX_DDL_LOCK = 0x76697472  # an arbitrary constant of this app ("vitr")


@contextlib.contextmanager
def _index_ddl_lock() -> Iterator[None]:
    if connection.in_atomic_block:  # tests: the transaction already serialises the DDL
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [_INDEX_DDL_LOCK])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_INDEX_DDL_LOCK])


#: HNSW build parameters of every partial index. pgvector's defaults (m 16,
#: ef_construction 64) gave image->image recall@10 0.92-0.93 at ef_search 100 on the 100k
#: bench catalog; m 32, ef_construction 128 gave 0.979 (0.958 at ef_search 40) for a build
#: of 128 s instead of 17-55 s (bench/results/search_latency.json, hnsw_build_sweep_image).
#: Indexes already built keep their parameters until rebuilt (REINDEX or a new version).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 128


def hnsw_index_sql(*, name: str, model_id: int, kind: str, dim: int, concurrently: str) -> str:
    """CREATE INDEX of one version's partial HNSW index of `kind` (the contract's form)."""
    # Identifiers and literals are built from integers and the fixed kind names.
    assert kind in KINDS
    return (
        f'CREATE INDEX {concurrently}IF NOT EXISTS "{name}" '
        "ON embeddings_productembedding "
        f"USING hnsw ((vector::halfvec({int(dim)})) halfvec_cosine_ops) "
        f"WITH (m = {int(HNSW_M)}, ef_construction = {int(HNSW_EF_CONSTRUCTION)}) "
        f"WHERE model_id = {int(model_id)} AND kind = '{kind}'"
    )


def index_name(*, model_id: int, kind: str) -> str:
    """Return the name of the partial HNSW index of one version and kind (the contract)."""
    return f"emb_{int(model_id)}_{kind}_hnsw"


def embedding_model_indexes_create(*, model: EmbeddingModel) -> None:
    """Create the partial HNSW cosine index of each kind of `model` (idempotent).

    CONCURRENTLY, so writes of the active version never wait on a new version's build; that
    needs autocommit, so inside a transaction (tests) the plain form is used.
    """
    if model.dimension is None:
        raise EmbeddingModelStateError(f"{model.key} has no dimension yet (not prepared)")
    dim, model_id = int(model.dimension), int(model.pk)
    concurrently = "" if connection.in_atomic_block else "CONCURRENTLY "
    with _index_ddl_lock(), connection.cursor() as cursor:
        if connection.in_atomic_block:
            # Deferred FK checks pending in this transaction would block CREATE INDEX.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for kind in KINDS:
            name = index_name(model_id=model_id, kind=kind)
            cursor.execute(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = %s",
                [name],
            )
            row = cursor.fetchone()
            if row is not None and row[0]:
                continue
            if row is not None:  # an interrupted CONCURRENTLY build leaves an invalid index
                cursor.execute(f'DROP INDEX {concurrently}IF EXISTS "{name}"')
            cursor.execute(
                hnsw_index_sql(
                    name=name, model_id=model_id, kind=kind, dim=dim, concurrently=concurrently
                )
            )
        if connection.in_atomic_block:
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def embedding_model_indexes_drop(*, model: EmbeddingModel) -> None:
    """Drop the partial indexes of `model` (idempotent)."""
    concurrently = "" if connection.in_atomic_block else "CONCURRENTLY "
    with _index_ddl_lock(), connection.cursor() as cursor:
        for kind in KINDS:
            name = index_name(model_id=int(model.pk), kind=kind)
            cursor.execute(f'DROP INDEX {concurrently}IF EXISTS "{name}"')
