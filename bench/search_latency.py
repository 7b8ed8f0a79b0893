"""Search latency and HNSW recall on a 100,000- or 1,000,000-product catalog.

Builds the catalog in the database it is given (run it in a throwaway stack), from real
H&M articles encoded by the model (9,300 of them by default: every article with a photo but
the 200 held out as queries), plus perturbed copies of their vectors up to the target size,
then measures p50/p95/p99 of:

- the vector query alone (`search.vector_sql.nearest_products`), with and without filters;
- text search, image search (encoding included) and similar items end-to-end over HTTP,
  against a real gunicorn serving the app with an API key;

and recall@10 of the HNSW answers against exact search (every vector's distance), with and
without filters. Results go to bench/results/search_latency.json.

    .venv/bin/python -m webapp.stack exec --throwaway -- \\
        .venv/bin/python bench/search_latency.py [--products 100000] [--real 9300]

Building takes about 25 minutes here (encoding, then two HNSW indexes). To re-measure after
a query-side change, keep the data directory and pass --reuse-catalog (and --cache for the
encoded vectors): `VITRINE_DATA_DIR=/tmp/bench-data python -m webapp.stack exec -- ...`.

At a million products (`--products 1000000 --kinds image --lean-copies`, results in
bench/results/search_latency_1m.json) only the image vectors are loaded and indexed, the
perturbed copies carry no description or attributes (the full-text document is not
measured), and the bench also records each HNSW build's time, peak memory and size, an
index on binary-quantized vectors searched with exact re-ranking (`--binary-quantization`),
a broad filter beside the selective one, the vector query phase repeated (`--query-passes`)
and how soon a product inserted into the big graph is returned (`--import-probes`). Give
PostgreSQL the memory first (the embedded server reads postgresql.auto.conf at start):

    VITRINE_DATA_DIR=/work/million-data python -m webapp.stack exec -- \\
        python bench/search_latency.py --configure-memory 3GB
    VITRINE_DATA_DIR=/work/million-data python -m webapp.stack exec -- \\
        python bench/search_latency.py --products 1000000 --kinds image --lean-copies \\
        --maintenance-work-mem 4GB --binary-quantization 100,400 --bq-hnsw 16:64 \\
        --query-passes 2 --import-probes 20 --prewarm --skip-http --repeats 200 \\
        --cache /tmp/v9300.npz --output bench/results/search_latency_1m.json

Loading takes about 5 minutes and the HNSW build 20 (m 32 / ef_construction 128 on 2 busy
cores), the binary-quantized one 6 more.

The model is the bundled default (`--spec default`). When its weights are not there yet the
bench says so and uses the same architecture untrained (`--allow-untrained`): latency is the
default model's, but results are not semantically meaningful.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
RESULTS = BASE_DIR / "bench" / "results" / "search_latency.json"


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "p50": pick(0.50),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "n": len(ordered),
        "mean": round(statistics.fmean(ordered), 2),
    }


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


# --- Model -----------------------------------------------------------------------------------
def load_encoder(spec: str, *, allow_untrained: bool, scratch: Path) -> tuple[Any, str, str]:
    """(encoder, spec the web server can load, note)."""
    from embeddings.ml.errors import ModelLoadError
    from embeddings.ml.loading import load_encoder as load

    try:
        # On ONNX Runtime, as the workers encode a catalog on a CPU (PyTorch eager took over an
        # hour for the 9,300 articles on a busy 2-core machine).
        encoder = load(spec, onnx_dir=scratch / "onnx")
        return encoder, spec, "bundled model" if spec == "default" else spec
    except ModelLoadError as error:
        if not allow_untrained or spec != "default":
            raise
        say(f"the default model cannot be loaded ({error}); using its architecture untrained")
    import torch

    from embeddings.ml.default_recipe import DEFAULT_CONFIG
    from embeddings.ml.loading import save_checkpoint
    from embeddings.ml.train import new_model

    loaded = new_model(DEFAULT_CONFIG)
    out = scratch / "untrained-default"
    save_checkpoint(
        loaded.model,
        dict(loaded.config),
        out,
        "Untrained stand-in for benches.",
        dtype=torch.float16,
    )
    checkpoint = f"checkpoint:{out}"
    return (
        load(checkpoint),
        checkpoint,
        "default architecture UNTRAINED (bundled weights not available at bench time): "
        "latency is representative, relevance is not",
    )


# --- Catalog ---------------------------------------------------------------------------------
def hm_articles(datasets: Path, count: int, seed: int) -> list[dict[str, Any]]:
    from catalog.document import ProductDocument

    folder = datasets / "hm"
    with (folder / "articles.csv").open(newline="", encoding="utf-8") as handle:
        rows = [
            r
            for r in csv.DictReader(handle)
            if (folder / "images" / f"{r['article_id']}.jpg").exists()
        ]
    random.Random(seed).shuffle(rows)
    for row in rows:
        row["image"] = str(folder / "images" / f"{row['article_id']}.jpg")
        row["category"] = f"{row['product_group_name']} > {row['product_type_name']}"
        row["attributes"] = hm_attributes(row)
        # What the embedding task reads: the product document (catalog.document).
        row["text"] = ProductDocument(
            title=row["prod_name"], brand="H&M", category=row["category"],
            attributes=row["attributes"], description=row["detail_desc"],
        ).text()  # fmt: skip
    return rows[:count]


def hm_attributes(row: dict[str, str]) -> dict[str, str]:
    """The attributes the `hm` import preset stores (catalog/ingest/presets/hm.json)."""
    preset = json.loads((BASE_DIR / "catalog/ingest/presets/hm.json").read_text())
    attributes = {name: row[column] for name, column in preset["attributes"].items()}
    attributes["color"] = row["colour_group_name"]
    return attributes


def encode_articles(encoder: Any, articles: list[dict[str, str]]) -> dict[str, np.ndarray]:
    paths = [a["image"] for a in articles]
    texts = [a["text"] for a in articles]
    images = encoder.encode_images(paths)
    fused = encoder.encode_items(paths, texts)
    if images.failed or fused.failed:
        raise SystemExit(f"images failed to encode: {images.failed or fused.failed}")
    return {"image": images.vectors, "fused": fused.vectors, "text": encoder.encode_texts(texts)}


def perturbed(
    vectors: np.ndarray, count: int, rng: np.random.Generator, *, chunk: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """`count` copies of random rows, each nudged off its source (cosine about 0.9)."""
    sources = rng.integers(0, len(vectors), size=count)
    out = np.empty((count, vectors.shape[1]), np.float32)
    # In chunks: a million rows of float64 noise would take 2 GB at once. The generator
    # draws in the same order, so the copies are the ones a single draw gave.
    for at in range(0, count, chunk):
        rows = sources[at : at + chunk]
        noise = rng.normal(0, 0.5 / np.sqrt(vectors.shape[1]), size=(len(rows), vectors.shape[1]))
        block = vectors[rows] + noise.astype(np.float32)
        out[at : at + len(rows)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out, sources


def literal(vector: np.ndarray) -> str:
    from embeddings.sql import vector_literal

    return vector_literal(vector.tolist())


def catalog_build(
    *,
    articles: list[dict[str, str]],
    vectors: dict[str, np.ndarray],
    total: int,
    model_key: str,
    spec: str,
    weights_sha256: str,
    seed: int,
    kinds: Sequence[str],
    lean_copies: bool,
    build: dict[str, Any],
) -> tuple[Any, dict[str, Any]]:
    """Load the catalog by COPY and build the HNSW index of each of `kinds`.

    (model version, what loading took: COPY seconds and each index build's figures.)
    `lean_copies`: the perturbed copies carry no description or attributes, so a million
    rows load in minutes (the full-text document is not what is measured here).
    """
    from django.db import connection
    from django.utils import timezone

    from embeddings.models import EmbeddingModel

    rng = np.random.default_rng(seed)
    copies = total - len(articles)
    fused_copies, sources = perturbed(vectors["fused"], copies, rng)
    by_kind: dict[str, np.ndarray] = {}
    if "fused" in kinds:
        by_kind["fused"] = np.concatenate([vectors["fused"], fused_copies])
    if "image" in kinds:
        # Each image copy moves off its source as its fused copy did (in chunks, as above).
        image = by_kind["image"] = np.empty((total, vectors["image"].shape[1]), np.float32)
        image[: len(articles)] = vectors["image"]
        for at in range(0, copies, 100_000):
            rows = sources[at : at + 100_000]
            block = vectors["image"][rows] + (
                fused_copies[at : at + len(rows)] - vectors["fused"][rows]
            )
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            image[len(articles) + at : len(articles) + at + len(rows)] = block
    del fused_copies
    origin = np.concatenate([np.arange(len(articles)), sources])
    if "text" in kinds:
        by_kind["text"] = vectors["text"][origin]  # copies share their source's words
    prices = rng.uniform(5, 120, size=total).round(2)
    in_stock = rng.random(total) < 0.85

    now = timezone.now()
    connection.ensure_connection()
    raw = connection.connection
    say(f"COPY {total} products")
    started = time.perf_counter()
    with (
        raw.cursor() as cur,
        cur.copy(
            "COPY catalog_product (sku, title, description, brand, category, group_id, price, "
            "currency, in_stock, url, attributes, content_hash, created_at, updated_at) FROM STDIN"
        ) as copy,
    ):
        for i in range(total):
            a = articles[origin[i]]
            real = i < len(articles)
            sku = a["article_id"] if real else f"{a['article_id']}-c{i}"
            lean = lean_copies and not real
            copy.write_row(
                (
                    sku,
                    a["prod_name"],
                    "" if lean else a["detail_desc"],
                    "H&M",
                    a["category"],
                    a["product_code"],
                    f"{prices[i]:.2f}",
                    "EUR",
                    bool(in_stock[i]),
                    "",
                    "{}" if lean else json.dumps(a["attributes"]),
                    f"h{i}",
                    now,
                    now,
                )
            )
    raw.commit()
    loading: dict[str, Any] = {"copy_products_seconds": round(time.perf_counter() - started, 1)}
    ids = [row[0] for row in raw.execute("SELECT id FROM catalog_product ORDER BY id")]
    model = EmbeddingModel.objects.create(
        key=model_key,
        spec=spec,
        dimension=vectors["fused"].shape[1],
        # As preparation records it: without a checksum, the web process would load the
        # weights afresh for every query (a version being prepared must; this one is not).
        weights_sha256=weights_sha256,
        state="active",
        prepared_at=now,
        activated_at=now,
    )
    say(f"COPY {len(by_kind) * total} vectors ({', '.join(by_kind)})")
    started = time.perf_counter()
    with (
        raw.cursor() as cur,
        cur.copy(
            "COPY embeddings_productembedding (product_id, model_id, kind, vector, content_hash, "
            "created_at) FROM STDIN"
        ) as copy,
    ):
        for kind, matrix in by_kind.items():
            for i in range(total):
                copy.write_row((ids[i], model.pk, kind, literal(matrix[i]), f"h{i}", now))
    raw.commit()
    loading["copy_vectors_seconds"] = round(time.perf_counter() - started, 1)
    del by_kind
    started = time.perf_counter()
    raw.execute("VACUUM ANALYZE catalog_product")
    raw.execute("VACUUM ANALYZE embeddings_productembedding")
    loading["vacuum_analyze_seconds"] = round(time.perf_counter() - started, 1)
    loading["index_builds"] = {}
    for kind in kinds:
        loading["index_builds"][kind] = index_build(model=model, kind=kind, **build)
        loading_remember(loading)
    raw.execute("ANALYZE embeddings_productembedding")
    raw.commit()
    return model, loading


def loading_remember(loading: dict[str, Any]) -> None:
    """Keep what loading took with the catalog (as the vector table's comment), so a run
    with --reuse-catalog reports it too."""
    from django.db import connection

    with connection.cursor() as cursor:
        # COMMENT takes no parameters; the literal is quoted by PostgreSQL itself.
        cursor.execute("SELECT quote_literal(%s)", [json.dumps(loading)])
        quoted = cursor.fetchone()[0]
        cursor.execute(f"COMMENT ON TABLE embeddings_productembedding IS {quoted}")


def loading_recalled() -> dict[str, Any]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT obj_description('embeddings_productembedding'::regclass)")
        comment = cursor.fetchone()[0]
    return json.loads(comment) if comment and comment.startswith("{") else {}


def catalog_existing(model_key: str, total: int) -> Any | None:
    """The bench's model version when an earlier run built its catalog here, else None."""
    from catalog.models import Product
    from embeddings.models import EmbeddingModel

    model = EmbeddingModel.objects.filter(key=model_key).first()
    if model is None or Product.objects.count() != total:
        return None
    return model


def index_exists(*, model: Any, kind: str, name: str | None = None) -> bool:
    from django.db import connection

    from embeddings.services.indexes import index_name

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_indexes WHERE indexname = %s",
            [name or index_name(model_id=model.pk, kind=kind)],
        )
        return cursor.fetchone() is not None


@contextmanager
def hnsw_parameters(m: int, ef_construction: int) -> Iterator[None]:
    """Build indexes with other HNSW parameters than the embeddings engine's, for a while."""
    from embeddings.services import indexes

    configured = indexes.HNSW_M, indexes.HNSW_EF_CONSTRUCTION
    indexes.HNSW_M, indexes.HNSW_EF_CONSTRUCTION = m, ef_construction
    try:
        yield
    finally:
        indexes.HNSW_M, indexes.HNSW_EF_CONSTRUCTION = configured


def _proc_kb(pid: int, *fields: str) -> int:
    """The sum of `fields` (kB) of /proc/<pid>/status; 0 once the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    return sum(int(line.split()[1]) for line in lines if line.split(":")[0] in fields)


def _parallel_workers(leader: int) -> list[int]:
    """PostgreSQL's parallel workers helping backend `leader` (from their process titles)."""
    mark = f"parallel worker for PID {leader}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@contextmanager
def memory_sampled(leader: int, every: float = 0.5) -> Iterator[dict[str, float]]:
    """Peak memory of a backend and its parallel workers while the block runs, in MB.

    The leader's private memory (RssAnon) and the shared memory it touched (RssShmem: a
    parallel HNSW build keeps its graph in a dynamic shared memory segment), and the
    workers' private memory. Needs to read /proc of the server's processes (same machine).
    """
    peak = {"leader_private_mb": 0.0, "leader_shared_mb": 0.0, "workers_private_mb": 0.0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(every):
            workers = _parallel_workers(leader)
            now = {
                "leader_private_mb": _proc_kb(leader, "RssAnon") / 1024,
                "leader_shared_mb": _proc_kb(leader, "RssShmem") / 1024,
                "workers_private_mb": sum(_proc_kb(w, "RssAnon") for w in workers) / 1024,
            }
            for key, value in now.items():
                peak[key] = max(peak[key], round(value, 1))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()


def relation_bytes(name: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_size(%s::regclass)", [name])
        return int(cursor.fetchone()[0])


def bq_index_name(*, model: Any, kind: str) -> str:
    return f"emb_{int(model.pk)}_{kind}_bq_hnsw"


def bq_index_sql(*, model: Any, kind: str) -> str:
    """An HNSW index on the binary-quantized vectors (1 bit a dimension, Hamming distance),
    partial like the engine's own; searched for candidates that exact cosine re-ranks."""
    from embeddings.services import indexes

    dim = int(model.dimension)
    assert kind in {"image", "text", "fused"}
    return (
        f'CREATE INDEX "{bq_index_name(model=model, kind=kind)}" ON embeddings_productembedding '
        f"USING hnsw ((binary_quantize(vector)::bit({dim})) bit_hamming_ops) "
        f"WITH (m = {int(indexes.HNSW_M)}, ef_construction = {int(indexes.HNSW_EF_CONSTRUCTION)}) "
        f"WHERE model_id = {int(model.pk)} AND kind = '{kind}'"
    )


def index_build(
    *,
    model: Any,
    kind: str,
    maintenance_work_mem: str = "1GB",
    parallel_workers: int = 1,
    binary: bool = False,
) -> dict[str, Any]:
    """(Re)build one partial HNSW index with the embeddings engine's SQL and parameters
    (`binary`: the binary-quantized index instead); its time, peak memory and size."""
    from django.db import connection

    from embeddings.services import indexes

    assert maintenance_work_mem[:-2].isdigit() and maintenance_work_mem[-2:] in {"MB", "GB"}
    raw = connection.connection
    if binary:
        name, sql = bq_index_name(model=model, kind=kind), bq_index_sql(model=model, kind=kind)
    else:
        name = indexes.index_name(model_id=model.pk, kind=kind)
        sql = indexes.hnsw_index_sql(
            name=name, model_id=model.pk, kind=kind, dim=int(model.dimension), concurrently=""
        )
    say(
        f"building {name} (m {indexes.HNSW_M}, ef_construction {indexes.HNSW_EF_CONSTRUCTION}, "
        f"maintenance_work_mem {maintenance_work_mem}, {parallel_workers} parallel workers)"
    )
    raw.execute(f'DROP INDEX IF EXISTS "{name}"')
    raw.execute(f"SET maintenance_work_mem = '{maintenance_work_mem}'")
    raw.execute(f"SET max_parallel_maintenance_workers = {int(parallel_workers)}")
    # pgvector says when the graph outgrows maintenance_work_mem (the build then slows down).
    notices: list[str] = []

    def keep(diagnostic: Any) -> None:
        notices.append(str(diagnostic.message_primary))

    raw.add_notice_handler(keep)
    leader = int(raw.execute("SELECT pg_backend_pid()").fetchone()[0])
    load_before = [round(x, 2) for x in os.getloadavg()]
    start = time.perf_counter()
    try:
        with memory_sampled(leader) as peak:
            raw.execute(sql)
            raw.commit()
    finally:
        raw.remove_notice_handler(keep)
    seconds = time.perf_counter() - start
    rows = int(
        raw.execute(
            "SELECT count(*) FROM embeddings_productembedding WHERE model_id = %s AND kind = %s",
            [model.pk, kind],
        ).fetchone()[0]
    )
    size = relation_bytes(name)
    say(f"  {seconds:.0f} s, {size / 2**20:.0f} MB, peak {peak}")
    return {
        "index": name,
        "m": indexes.HNSW_M,
        "ef_construction": indexes.HNSW_EF_CONSTRUCTION,
        "rows": rows,
        "build_seconds": round(seconds, 1),
        "size_mb": round(size / 2**20, 1),
        "bytes_per_row": round(size / max(1, rows)),
        "maintenance_work_mem": maintenance_work_mem,
        "max_parallel_maintenance_workers": parallel_workers,
        "peak_memory_mb": dict(peak),
        "notices": notices,
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


# --- Measurements ------------------------------------------------------------------------
#: Exact answers already computed, by (version, kind, filters, query): the truth does not
#: change between ef_search values, index kinds or passes, and at a million products each
#: exact search is a scan of every vector.
_EXACT: dict[tuple[int, str, str, bytes, int], list[tuple[int, float]]] = {}


def exact_nearest(
    *, model: Any, kind: str, vector: np.ndarray, filters: Any, limit: int
) -> list[tuple[int, float]]:
    """The true nearest products: the same query ordered by an expression no index serves
    (`+ 0`), so every candidate's distance is computed."""
    from django.db import connection

    from search.vector_sql import (
        EMBEDDING_TABLE,
        distance_sql,
        embedding_predicate,
        filter_sql,
    )

    key = (int(model.pk), kind, repr(filters), vector.tobytes(), limit)
    if key in _EXACT:
        return _EXACT[key]
    where, params = filter_sql(filters)
    # Without filters the products are not needed: every vector row has its product (FK).
    join = " JOIN catalog_product p ON p.id = e.product_id" if where else ""
    sql = (
        f"SELECT e.product_id, {distance_sql(model)} AS d "  # noqa: S608
        f"FROM {EMBEDDING_TABLE} e{join} "
        f"WHERE {embedding_predicate(model, kind)}{where} "
        f"ORDER BY ({distance_sql(model)}) + 0, e.product_id LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [literal(vector), *params, literal(vector), limit])
        _EXACT[key] = [(row[0], float(row[1])) for row in cursor.fetchall()]
    return _EXACT[key]


def nearest_products_bq(
    *, model: Any, kind: str, vector: np.ndarray, filters: Any, limit: int, candidates: int
) -> list[tuple[int, float]]:
    """`search.vector_sql.nearest_products` through the binary-quantized index: the
    `candidates` nearest by Hamming distance, re-ranked by exact cosine on the halfvec."""
    from django.db import connection, transaction

    from search.vector_sql import vector_scan_prepare

    sql, params = bq_sql(model=model, kind=kind, vector=vector, filters=filters,
                         limit=limit, candidates=candidates)  # fmt: skip
    with transaction.atomic(), connection.cursor() as cursor:
        vector_scan_prepare(cursor, limit=candidates)
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [(int(product_id), 1.0 - float(distance)) for product_id, distance in rows]


def bq_sql(
    *, model: Any, kind: str, vector: np.ndarray, filters: Any, limit: int, candidates: int
) -> tuple[str, list[Any]]:
    from search.vector_sql import EMBEDDING_TABLE, embedding_predicate, filter_sql

    dim = int(model.dimension)
    where, params = filter_sql(filters)
    query = literal(vector)
    sql = f"""
        WITH candidates AS MATERIALIZED (
            SELECT e.product_id, e.vector
            FROM {EMBEDDING_TABLE} e JOIN catalog_product p ON p.id = e.product_id
            WHERE {embedding_predicate(model, kind)}{where}
            ORDER BY binary_quantize(e.vector)::bit({dim}) <~> binary_quantize(%s::halfvec({dim}))
            LIMIT %s
        )
        SELECT product_id, (vector::halfvec({dim})) <=> %s::halfvec({dim}) AS distance
        FROM candidates ORDER BY distance, product_id LIMIT %s
    """  # noqa: S608
    return sql, [*params, query, candidates, query, limit]


def bq_plan(
    *, model: Any, kind: str, vector: np.ndarray, filters: Any, candidates: int
) -> list[str]:
    from django.db import connection, transaction

    from search.vector_sql import vector_scan_prepare

    sql, params = bq_sql(model=model, kind=kind, vector=vector, filters=filters,
                         limit=24, candidates=candidates)  # fmt: skip
    with transaction.atomic(), connection.cursor() as cursor:
        vector_scan_prepare(cursor, limit=candidates)
        cursor.execute("EXPLAIN (ANALYZE, COSTS off) " + sql, params)
        return [row[0] for row in cursor.fetchall()]


def import_to_searchable(
    *, model: Any, kind: str, vectors: np.ndarray, probes: int, category: str
) -> dict[str, Any]:
    """How soon a new product is found: insert its row and vector (committed), then ask the
    vector query for the product's own vector until the product is in its first 10.

    pgvector adds the row to the HNSW graph inside the INSERT, so the wait is the insert into
    a graph of this size plus one query; the encoding before it is `bench/embed_throughput.py`'s.
    Vectors are held-out articles' (not in the catalog). The probe rows are deleted after.
    """
    from django.db import connection
    from django.utils import timezone

    from search.selectors import SearchFilters
    from search.vector_sql import nearest_products

    raw = connection.connection
    insert_ms: list[float] = []
    visible_ms: list[float] = []
    queries_needed: list[int] = []
    product_ids: list[int] = []
    token = secrets.token_hex(4)
    try:
        for i in range(probes):
            vector = vectors[i % len(vectors)]
            now = timezone.now()
            start = time.perf_counter()
            with raw.transaction():
                product_id = int(
                    raw.execute(
                        "INSERT INTO catalog_product (sku, title, description, brand, category, "
                        "group_id, price, currency, in_stock, url, attributes, content_hash, "
                        "created_at, updated_at) VALUES (%s, 'probe', '', 'H&M', %s, '', 10, "
                        "'EUR', true, '', '{}', %s, %s, %s) RETURNING id",
                        [f"probe-{token}-{i}", category, f"p{i}", now, now],
                    ).fetchone()[0]
                )
                product_ids.append(product_id)
                raw.execute(
                    "INSERT INTO embeddings_productembedding (product_id, model_id, kind, vector, "
                    "content_hash, created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                    [product_id, model.pk, kind, literal(vector), f"p{i}", now],
                )
            insert_ms.append((time.perf_counter() - start) * 1000)
            for attempt in range(1, 101):
                rows = nearest_products(
                    model=model, kind=kind, vector=vector, filters=SearchFilters(), limit=10
                )
                if product_id in {pid for pid, _ in rows}:
                    visible_ms.append((time.perf_counter() - start) * 1000)
                    queries_needed.append(attempt)
                    break
    finally:
        with raw.transaction():
            raw.execute(
                "DELETE FROM embeddings_productembedding WHERE product_id = ANY(%s)", [product_ids]
            )
            raw.execute("DELETE FROM catalog_product WHERE id = ANY(%s)", [product_ids])
    return {
        "probes": probes,
        "insert_product_and_vector_committed_ms": percentiles(insert_ms),
        "insert_to_returned_by_vector_query_ms": percentiles(visible_ms) if visible_ms else None,
        "found": len(visible_ms),
        "queries_until_found_max": max(queries_needed, default=None),
    }


def query_plan(*, model: Any, kind: str, vector: np.ndarray, filters: Any) -> list[str]:
    """EXPLAIN ANALYZE of the selectors' vector query, to show which index answered."""
    from django.db import connection, transaction

    from search.vector_sql import (
        EMBEDDING_TABLE,
        distance_sql,
        embedding_predicate,
        filter_sql,
        vector_scan_prepare,
    )

    where, params = filter_sql(filters)
    sql = (
        f"EXPLAIN (ANALYZE, COSTS off) SELECT e.product_id FROM {EMBEDDING_TABLE} e "  # noqa: S608
        f"JOIN catalog_product p ON p.id = e.product_id "
        f"WHERE {embedding_predicate(model, kind)}{where} "
        f"ORDER BY {distance_sql(model)} LIMIT 24"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        vector_scan_prepare(cursor, limit=24)
        cursor.execute(sql, [*params, literal(vector)])
        return [row[0] for row in cursor.fetchall()]


def query_transform(model: Any, name: str) -> Callable[[np.ndarray], np.ndarray]:
    """How a text query reaches the fused index: "map" is what text search sends
    (`search.selectors.text_query_vector`: the version's text query map); "centroid_shift"
    the modality-gap shift it replaced; "raw" the words' own vector; "none" for images."""
    from search import selectors

    if name == "map":
        return lambda vector: selectors.text_query_vector(model=model, vector=vector)
    if name == "centroid_shift":
        centroids = model.centroids
        gap = np.asarray(centroids["fused"], np.float32) - np.asarray(centroids["text"], np.float32)
        return lambda vector: (vector + gap) / np.linalg.norm(vector + gap)
    return lambda vector: vector


def vector_benchmarks(
    *,
    model: Any,
    kind: str,
    queries: np.ndarray,
    filters: Any,
    repeats: int,
    transform: str = "none",
    candidates: int = 0,
) -> dict[str, Any]:
    """Latency of `nearest_products` (a 24-item page) and recall@10 against exact search.
    With `candidates`, of `nearest_products_bq` (binary-quantized index, re-ranked) instead.

    Two recalls: by id (the share of the true 10 nearest returned) and ann-benchmarks'
    (a returned item counts when its distance is within the 10th true distance + 1e-3),
    which does not penalise swapping items whose distances tie, as perturbed copies do.
    `transform` (see `query_transform`) is timed with the query; exact search gets the same
    transformed query.
    """
    from search.vector_sql import (
        nearest_products,
    )

    move = query_transform(model, transform)
    samples: list[float] = []
    page_sizes: list[int] = []
    answers: list[tuple[np.ndarray, list[tuple[int, float]]]] = []
    for index in range(repeats):
        query = queries[index % len(queries)]
        start = time.perf_counter()
        query = move(query)
        if candidates:
            rows = nearest_products_bq(model=model, kind=kind, vector=query, filters=filters,
                                       limit=24, candidates=candidates)  # fmt: skip
        else:
            rows = nearest_products(model=model, kind=kind, vector=query, filters=filters, limit=24)
        samples.append((time.perf_counter() - start) * 1000)
        page_sizes.append(len(rows))
        if index < 100:
            answers.append((query, rows))
    # Exact search afterwards, not between the timed queries: its sequential scans would
    # push the index out of the caches that serve them in production.
    recalls: list[float] = []
    distance_recalls: list[float] = []
    for query, rows in answers:
        approx = rows[:10]
        exact = exact_nearest(model=model, kind=kind, vector=query, filters=filters, limit=10)
        truth = {pid for pid, _ in exact}
        recalls.append(len({pid for pid, _ in approx} & truth) / max(1, len(exact)))
        threshold = exact[-1][1] + 1e-3 if exact else 0.0
        close = sum(1 for _, score in approx if 1.0 - score <= threshold)
        distance_recalls.append(close / max(1, len(exact)))
    return {
        "query_kind": kind,
        "query_transform": transform,
        "latency_ms": percentiles(samples),
        "plan": (
            bq_plan(
                model=model, kind=kind, vector=queries[0], filters=filters, candidates=candidates
            )
            if candidates
            else query_plan(model=model, kind=kind, vector=queries[0], filters=filters)
        ),
        "recall_at_10": round(statistics.fmean(recalls), 4),
        "recall_at_10_ann_benchmarks": round(statistics.fmean(distance_recalls), 4),
        "recall_queries": len(recalls),
        "min_page_size": min(page_sizes),
        "page_size_asked": 24,
    }


def ef_search_sweep(
    *,
    model: Any,
    kind: str,
    queries: np.ndarray,
    values: Sequence[int],
    repeats: int,
    transform: str = "none",
) -> list[dict[str, Any]]:
    """Recall@10 and latency for several hnsw.ef_search values (the speed/recall knob)."""
    from django.conf import settings

    from search.selectors import SearchFilters

    configured = settings.VITRINE_HNSW_EF_SEARCH
    rows = []
    try:
        for ef in values:
            settings.VITRINE_HNSW_EF_SEARCH = ef
            result = vector_benchmarks(
                model=model,
                kind=kind,
                queries=queries,
                filters=SearchFilters(),
                repeats=repeats,
                transform=transform,
            )
            rows.append(
                {
                    "ef_search": ef,
                    "p50_ms": result["latency_ms"]["p50"],
                    "p95_ms": result["latency_ms"]["p95"],
                    "recall_at_10": result["recall_at_10"],
                    "recall_at_10_ann_benchmarks": result["recall_at_10_ann_benchmarks"],
                }
            )
    finally:
        settings.VITRINE_HNSW_EF_SEARCH = configured
    return rows


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(port: int, scratch: Path, *, torch_threads: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "LOG_LEVEL": "WARNING",
        "MEDIA_ROOT": str(scratch / "media"),
        "VITRINE_API_KEY_RATE": "100000/min",
        # Was not passed before: the web process then took torch's default (2 threads here).
        "VITRINE_TORCH_THREADS": str(torch_threads),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "webapp.wsgi",
            "-b",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "1",
            "--timeout",
            "300",
        ],
        cwd=BASE_DIR,
        env=env,
    )


def http_benchmarks(
    *,
    port: int,
    key: str,
    articles: list[dict[str, str]],
    skus: list[str],
    repeats: int,
    rng: random.Random,
) -> dict[str, Any]:
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Api-Key {key}"},
        timeout=120,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            client.get("/healthz")
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    # Every timed text query is new to the server (the web process caches the vectors of
    # words it has seen): product names and colour + type pairs, shuffled, none repeated.
    distinct = list(
        dict.fromkeys(
            [a["prod_name"].strip().lower() for a in articles]
            + [f"{a['colour_group_name']} {a['product_type_name']}".lower() for a in articles]
        )
    )
    rng.shuffle(distinct)
    fresh = iter(distinct)
    # Shoppers repeat themselves: a head of 30 queries, asked again and again.
    popular = distinct[-30:]
    # Every photo is sent once: the web process caches the vectors of photos it has seen.
    photos = iter([Path(a["image"]).read_bytes() for a in articles[: max(50, repeats // 2) + 3]])

    def text() -> None:
        response = client.get("/api/v1/search/text/", params={"q": next(fresh)})
        response.raise_for_status()

    def text_popular() -> None:
        response = client.get("/api/v1/search/text/", params={"q": rng.choice(popular)})
        response.raise_for_status()

    def image() -> None:
        data = next(photos)
        response = client.post("/api/v1/search/image/", files={"image": ("q.jpg", data)})
        response.raise_for_status()

    def similar() -> None:
        response = client.get(f"/api/v1/products/{rng.choice(skus)}/similar/")
        response.raise_for_status()

    for warm in (text, image, similar, text_popular):  # load the encoder, fill caches
        for _ in range(3):
            warm()
    results: dict[str, Any] = {
        "text_search_http_ms": percentiles(timed(text, min(repeats, len(distinct) - 40))),
        "text_search_http_ms_note": "every query distinct, so each is encoded",
        "text_search_popular_queries_http_ms": percentiles(timed(text_popular, repeats)),
        "image_search_http_ms": percentiles(timed(image, max(50, repeats // 2))),
        "similar_items_http_ms": percentiles(timed(similar, repeats)),
    }
    sample = client.get("/api/v1/search/text/", params={"q": "black dress"}).json()
    results["example_text_search"] = {
        "q": "black dress",
        "top5": [
            (hit["product"]["title"], hit["product"]["category"], hit["score"])
            for hit in sample["results"][:5]
        ],
    }
    return results


def memory_configure(shared_buffers: str) -> None:
    """Give the server `shared_buffers` (and WAL room for the bulk load) from its next start."""
    from django.db import connection

    assert shared_buffers[:-2].isdigit() and shared_buffers[-2:] in {"MB", "GB"}
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}'")
        # Fewer checkpoints while a million rows and their index pages are written.
        cursor.execute("ALTER SYSTEM SET max_wal_size = '8GB'")
    say(f"shared_buffers = {shared_buffers} from the server's next start (run the bench again)")


def server_settings() -> dict[str, str]:
    from django.db import connection

    names = ("shared_buffers", "effective_cache_size", "work_mem", "max_wal_size",
             "max_parallel_workers_per_gather", "server_version")  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        found = {"pgvector": str(cursor.fetchone()[0])}
        for name in names:
            cursor.execute(f"SHOW {name}")
            found[name] = str(cursor.fetchone()[0])
    return found


def relations(*, model: Any, kinds: Sequence[str], binary: bool) -> list[str]:
    from embeddings.services.indexes import index_name

    names = ["catalog_product", "embeddings_productembedding"]
    names += [index_name(model_id=model.pk, kind=kind) for kind in kinds]
    if binary:
        names.append(bq_index_name(model=model, kind="image"))
    return names


def prewarm(*, model: Any, kinds: Sequence[str], binary: bool) -> dict[str, Any]:
    """Read the tables and the searched indexes into shared_buffers (pg_prewarm), as a
    server sized to hold them would have them after a while."""
    from django.db import connection

    started = time.perf_counter()
    pages = {}
    with connection.cursor() as cursor:
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        for name in relations(model=model, kinds=kinds, binary=binary):
            cursor.execute("SELECT pg_prewarm(%s::regclass)", [name])
            pages[name] = int(cursor.fetchone()[0])
    return {"pages": pages, "seconds": round(time.perf_counter() - started, 1)}


def sizes(*, model: Any, kinds: Sequence[str], binary: bool) -> dict[str, Any]:
    """On-disk size of the tables (heap, TOAST included) and of each searched index, in MB."""
    from django.db import connection

    out: dict[str, Any] = {}
    with connection.cursor() as cursor:
        for name in relations(model=model, kinds=kinds, binary=binary):
            cursor.execute(
                "SELECT pg_table_size(%s::regclass), pg_indexes_size(%s::regclass), "
                "pg_relation_size(%s::regclass)",
                [name, name, name],
            )
            table, all_indexes, main = cursor.fetchone()
            if name in ("catalog_product", "embeddings_productembedding"):
                out[name] = {
                    "table_mb": round(table / 2**20, 1),
                    "all_its_indexes_mb": round(all_indexes / 2**20, 1),
                }
            else:
                out[name] = {"index_mb": round(main / 2**20, 1)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--real", type=int, default=9300, help="H&M articles really encoded")
    parser.add_argument("--spec", default="default")
    parser.add_argument("--allow-untrained", action="store_true")
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--held-out", type=int, default=200, help="articles used as queries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch threads of the web process (one request per worker)",
    )
    parser.add_argument("--model-note", default="", help="where the weights came from")
    parser.add_argument(
        "--cache", type=Path, help="an .npz to keep the encoded vectors in (re-runs skip encoding)"
    )
    parser.add_argument(
        "--build-sweep",
        default="",
        help="HNSW build parameters to compare on the image index, as m:ef_construction,... "
        "(the index is rebuilt for each; the configured one is measured last)",
    )
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument(
        "--reuse-catalog",
        action="store_true",
        help="keep a catalog an earlier run built in this data directory (a persistent "
        "`webapp.stack exec` without --throwaway): query-side changes re-measure in minutes",
    )
    parser.add_argument(
        "--skip-vector", action="store_true", help="only the HTTP figures (no recall, no sweeps)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--kinds",
        default="fused,image,text",
        help="vector kinds loaded, indexed and measured (a million products: image)",
    )
    parser.add_argument(
        "--lean-copies",
        action="store_true",
        help="perturbed copies without description or attributes (loads a million faster)",
    )
    parser.add_argument("--maintenance-work-mem", default="1GB", help="for the HNSW builds")
    parser.add_argument(
        "--parallel-workers", type=int, default=1, help="max_parallel_maintenance_workers"
    )
    parser.add_argument(
        "--hnsw", default="", help="m:ef_construction instead of the engine's (e.g. 16:64)"
    )
    parser.add_argument(
        "--binary-quantization",
        default="",
        help="also build a binary-quantized HNSW index on the image vectors and search it "
        "with exact re-ranking of this many candidates, as n,n,... (e.g. 100,200,400)",
    )
    parser.add_argument(
        "--bq-hnsw",
        default="",
        help="m:ef_construction of the binary-quantized index (default: as the halfvec one)",
    )
    parser.add_argument(
        "--ef-values", default="40,64,100,200,400", help="the ef_search sweep's values"
    )
    parser.add_argument("--query-passes", type=int, default=1, help="vector query phase repeats")
    parser.add_argument(
        "--import-probes", type=int, default=0, help="new products timed until searchable"
    )
    parser.add_argument(
        "--prewarm", action="store_true", help="load tables and indexes into shared_buffers first"
    )
    parser.add_argument(
        "--configure-memory",
        default="",
        help="only set the server's shared_buffers to this (ALTER SYSTEM) and exit; the next "
        "`webapp.stack exec` in the same data directory starts with it",
    )
    args = parser.parse_args()
    kinds = [kind for kind in args.kinds.split(",") if kind]

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from embeddings.services import indexes
    from embeddings.services.centroids import embedding_model_centroids_update
    from search.selectors import SearchFilters
    from search.services import api_key_create

    if args.configure_memory:
        memory_configure(args.configure_memory)
        return
    call_command("migrate", verbosity=0)
    scratch = Path(tempfile.mkdtemp(prefix="vitrine-bench-"))
    started = time.time()
    # The machine may be shared: the load says how much of it the figures had.
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    encoder, spec, model_note = load_encoder(
        args.spec, allow_untrained=args.allow_untrained, scratch=scratch
    )
    pool = hm_articles(Path(settings.VITRINE_DATASETS), args.real + args.held_out, args.seed)
    articles, held_out = pool[: args.real], pool[args.real :]
    shopper_words = [f"{a['colour_group_name']} {a['product_type_name']}".lower() for a in held_out]
    t0 = time.perf_counter()
    if args.cache and args.cache.exists():
        say(f"encoded vectors from {args.cache}")
        cached = np.load(args.cache)
        vectors = {kind: cached[kind] for kind in ("image", "fused", "text")}
        held_image_vectors, word_vectors = cached["held_image"], cached["held_words"]
    else:
        say(f"encoding {len(articles)} H&M articles with {spec} (dim {encoder.dim})")
        vectors = encode_articles(encoder, articles)
        # Queries come from articles NOT in the catalog: a shopper's photo or words.
        say(f"encoding {len(held_out)} held-out articles as queries")
        held_image_vectors = encoder.encode_images([a["image"] for a in held_out]).vectors
        word_vectors = encoder.encode_texts(shopper_words)
        if args.cache:
            np.savez(args.cache, **vectors, held_image=held_image_vectors, held_words=word_vectors)
    encode_seconds = time.perf_counter() - t0
    text_name = "text_search (text -> fused vectors)"
    query_sets = {
        "image_search (image -> image vectors)": ("image", held_image_vectors, "none"),
        # As text search sends it: through the version's text query map...
        text_name: ("fused", word_vectors, "map"),
        # ...and as it is, against the products' own text vectors.
        "text_search (text -> text vectors)": ("text", word_vectors, "none"),
        "similar_items (fused -> fused vectors)": (
            "fused",
            vectors["fused"][: len(held_out)],
            "none",
        ),
    }
    query_sets = {name: entry for name, entry in query_sets.items() if entry[0] in kinds}
    text_measured = {"fused", "text"} <= set(kinds)
    build = {
        "maintenance_work_mem": args.maintenance_work_mem,
        "parallel_workers": args.parallel_workers,
    }
    hnsw = tuple(int(x) for x in args.hnsw.split(":")) if args.hnsw else None
    hnsw_scope = ExitStack()  # the builds' parameters, when --hnsw gives others
    if hnsw:
        hnsw_scope.enter_context(hnsw_parameters(*hnsw))
    loading: dict[str, Any] = {}
    model = catalog_existing("bench-v1", args.products) if args.reuse_catalog else None
    if model is None:
        model, loading = catalog_build(
            articles=articles,
            vectors=vectors,
            total=args.products,
            model_key="bench-v1",
            spec=spec,
            weights_sha256=encoder.weights_sha256,
            seed=args.seed,
            kinds=kinds,
            lean_copies=args.lean_copies,
            build=build,
        )
    else:
        say(f"reusing the {args.products}-product catalog of {model.key}")
        loading = loading_recalled()
        model.weights_sha256 = encoder.weights_sha256
        model.save(update_fields=["weights_sha256"])
        for kind in kinds:  # catalogs built before text search used the text index
            if not index_exists(model=model, kind=kind):
                loading.setdefault("index_builds", {})[kind] = index_build(
                    model=model, kind=kind, **build
                )
                loading_remember(loading)
    bq_candidates = [int(n) for n in args.binary_quantization.split(",") if n]
    if bq_candidates and not index_exists(
        model=model, kind="image", name=bq_index_name(model=model, kind="image")
    ):
        bq_scope = ExitStack()
        if args.bq_hnsw:
            bq_scope.enter_context(hnsw_parameters(*(int(x) for x in args.bq_hnsw.split(":"))))
        with bq_scope:
            loading["binary_quantized_index_build"] = index_build(
                model=model, kind="image", binary=True, **build
            )
        loading_remember(loading)
    hnsw_scope.close()
    text_map_seconds = 0.0
    if text_measured:
        say("centroids and the text query map (fitted on the stored vectors)")
        fit_started = time.perf_counter()
        embedding_model_centroids_update(model=model)
        text_map_seconds = time.perf_counter() - fit_started
        model.refresh_from_db()
    if not args.skip_http:
        from search.vocabulary import vocabulary_rebuild

        say(f"query vocabulary: {vocabulary_rebuild()} terms")
    sample = vectors["fused"][:500]
    nearest_fused = np.sort(sample @ vectors["fused"].T, axis=1)[:, -11:-1]  # self excluded

    def precision(top: np.ndarray) -> dict[str, float]:
        """Share of each query's top 10 (real articles, exact) of the asked product type
        and of the asked colour."""
        out = {}
        for field in ("product_type_name", "colour_group_name"):
            hits = [
                articles[j][field] == held_out[i][field] for i, row in enumerate(top) for j in row
            ]
            out[f"precision_at_10_{field}"] = round(float(np.mean(hits)), 4)
        return out

    def ranked_by(name: str) -> np.ndarray:
        """Each held-out query's real articles, best first, as one of text search's vector
        rankings would order them: against the fused vectors after a query transform, or
        ("text") against the products' own text vectors."""
        if name == "text":
            return np.argsort(-(word_vectors @ vectors["text"].T), axis=1)
        move = query_transform(model, name)
        queries = np.stack([move(q) for q in word_vectors])
        return np.argsort(-(queries @ vectors["fused"].T), axis=1)

    def ranking_quality(name: str) -> dict[str, float]:
        """`precision`, and how close the transformed query lies to products (mean cosine
        to its 10 nearest, against products' own 10 nearest)."""
        move = query_transform(model, name)
        similarity = np.stack([move(q) for q in word_vectors]) @ vectors["fused"].T
        return {
            **precision(np.argsort(-similarity, axis=1)[:, :10]),
            "mean_cosine_to_10_nearest_products": round(
                float(np.sort(similarity, axis=1)[:, -10:].mean()), 4
            ),
        }

    def fused_ranks(names: Sequence[str]) -> np.ndarray:
        """Reciprocal rank fusion of the named rankings' first 60 (how search fused them before
        its weighted ranking, search/ranking.py; kept as a reference figure)."""
        rrf_k = 60

        rankings = [ranked_by(name)[:, :60] for name in names]
        top = []
        for row in range(len(word_vectors)):
            scores: dict[int, float] = {}
            for ranking in rankings:
                for rank, index in enumerate(ranking[row], start=1):
                    scores[int(index)] = scores.get(int(index), 0.0) + 1.0 / (rrf_k + rank)
            top.append(sorted(scores, key=lambda index: -scores[index])[:10])
        return np.array(top)

    text_map_row = model.text_query_map if text_measured else None
    text_query = (
        {}
        if text_map_row is None
        else {
            "how": "a text query is ranked against the fused vectors after `transform`: map = "
            "the version's text query map, centroid_shift = the modality-gap shift it replaced, "
            "raw = the words' own vector; text = against the products' text vectors; "
            "search fuses map and text (and full-text matches, not measured here) by RRF",
            "products_mean_cosine_to_their_10_nearest": round(float(nearest_fused.mean()), 4),
            "map_fitted_on_pairs": text_map_row.pairs,
            "map_fit_cosine": text_map_row.fit_cosine,
            "map_fit_seconds": round(text_map_seconds, 2),
            **{name: ranking_quality(name) for name in ("map", "centroid_shift", "raw")},
            "text": precision(ranked_by("text")[:, :10]),
            "rrf_of_map_and_text (search)": precision(fused_ranks(["map", "text"])),
        }
    )

    categories: dict[str, int] = {}
    for article in articles:
        categories[article["category"]] = categories.get(article["category"], 0) + 1
    rare = sorted(categories.items(), key=lambda kv: kv[1])[len(categories) // 2][0]
    share = categories[rare] / len(articles)
    filtered = SearchFilters(category=[rare], in_stock=True)
    # A broad filter too (the largest category): there the planner walks the HNSW index with
    # iterative scans, where for the selective one it reads the category's rows and sorts.
    broad = max(categories, key=lambda name: categories[name])
    filters_measured = {
        "unfiltered": SearchFilters(),
        "filtered": filtered,
        "filtered_broad": SearchFilters(category=[broad], in_stock=True),
    }
    prewarmed = (
        prewarm(model=model, kinds=kinds, binary=bool(bq_candidates)) if args.prewarm else {}
    )
    passes: list[dict[str, Any]] = []
    for number in range(1, args.query_passes + 1) if not args.skip_vector else ():
        measured: dict[str, Any] = {"load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
        for name, (kind, queries, transform) in query_sets.items():
            for label, filters in filters_measured.items():
                say(f"pass {number}, vector query, {name}, {label} ({filters})")
                measured.setdefault(name, {})[label] = vector_benchmarks(
                    model=model,
                    kind=kind,
                    queries=queries,
                    filters=filters,
                    repeats=args.repeats,
                    transform=transform,
                )
        for n in bq_candidates:
            name = f"image_search, binary-quantized index, {n} candidates re-ranked"
            for label, filters in filters_measured.items():
                say(f"pass {number}, {name}, {label}")
                measured.setdefault(name, {})[label] = vector_benchmarks(
                    model=model,
                    kind="image",
                    queries=held_image_vectors,
                    filters=filters,
                    repeats=args.repeats,
                    candidates=n,
                )
        measured["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        passes.append(measured)
    vector_query: dict[str, Any] = (
        {k: v for k, v in passes[0].items() if not k.startswith("load_")} if passes else {}
    )
    sweeps: dict[str, Any] = {}
    ef_values = [int(n) for n in args.ef_values.split(",") if n]
    image_name = "image_search (image -> image vectors)"
    for name, transform in (
        (
            (image_name, "none"),
            (text_name, "map"),
            (text_name + ", before: the centroid shift", "centroid_shift"),
            (text_name + ", before: the text query itself", "raw"),
        )
        if not args.skip_vector
        else ()
    ):
        if name.split(", before")[0] not in query_sets:
            continue
        say(f"ef_search sweep, {name}")
        kind, queries, _ = query_sets[name.split(", before")[0]]
        sweeps[name] = ef_search_sweep(
            model=model,
            kind=kind,
            queries=queries,
            values=ef_values,
            repeats=100,
            transform=transform,
        )
    build_sweep: list[dict[str, Any]] = []
    configured = (indexes.HNSW_M, indexes.HNSW_EF_CONSTRUCTION)
    if args.build_sweep:
        pairs = [tuple(int(x) for x in pair.split(":")) for pair in args.build_sweep.split(",")]
        # Before, the sweep rebound names local to main(): every "m:ef" built the
        # engine's parameters. hnsw_parameters sets the ones the index SQL reads.
        for m, ef_construction in [*pairs, configured]:
            with hnsw_parameters(m, ef_construction):
                built = index_build(model=model, kind="image", **build)
                build_sweep.append(
                    {
                        "m": m,
                        "ef_construction": ef_construction,
                        "build_seconds": built["build_seconds"],
                        "image_search_sweep": ef_search_sweep(
                            model=model,
                            kind="image",
                            queries=held_image_vectors,
                            values=ef_values,
                            repeats=100,
                        ),
                    }
                )

    import_probes = (
        import_to_searchable(
            model=model,
            kind="image",
            vectors=held_image_vectors,
            probes=args.import_probes,
            category=rare,
        )
        if args.import_probes
        else None
    )
    http: dict[str, Any] = {}
    if not args.skip_http:
        key = api_key_create(name="bench").plaintext
        port = free_port()
        server = serve(port, scratch, torch_threads=args.torch_threads)
        try:
            say("HTTP: text, image and similar-items searches")
            skus = [a["article_id"] for a in articles]
            http = http_benchmarks(
                port=port,
                key=key,
                articles=articles,
                skus=skus,
                repeats=args.repeats,
                rng=random.Random(args.seed),
            )
        finally:
            server.terminate()
            server.wait(30)

    report = {
        "catalog_products": args.products,
        "real_hm_articles_encoded": len(articles),
        "held_out_query_articles": len(held_out),
        "perturbed_copies": args.products - len(articles),
        "model_spec": spec,
        "model_note": args.model_note or model_note,
        "web_torch_threads": args.torch_threads,
        "ef_search_sweep_unfiltered": sweeps,
        "hnsw_build_sweep_image": build_sweep,
        "text_query": text_query,
        "dimension": int(encoder.dim),
        "hnsw": {
            "m": hnsw[0] if hnsw else indexes.HNSW_M,
            "ef_construction": hnsw[1] if hnsw else indexes.HNSW_EF_CONSTRUCTION,
            "ef_search": settings.VITRINE_HNSW_EF_SEARCH,
            "iterative_scan": "relaxed_order",
        },
        "vector_query": vector_query,
        "filter_used": {"category": rare, "in_stock": True, "category_share": round(share, 4)},
        "filter_broad": {
            "category": broad,
            "in_stock": True,
            "category_share": round(categories[broad] / len(articles), 4),
        },
        "vector_kinds_loaded": kinds,
        "perturbed_copies_lean": args.lean_copies,
        "loading": loading,
        "sizes": sizes(model=model, kinds=kinds, binary=bool(bq_candidates)),
        "server": server_settings(),
        "prewarmed": prewarmed,
        "vector_query_passes": passes,
        "import_to_searchable": import_probes,
        **http,
        "machine": {
            "load_average_at_start": load_at_start,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "encode_seconds_for_real_articles": round(encode_seconds, 1),
        "total_seconds": round(time.time() - started, 1),
        "command": (
            "VITRINE_DATA_DIR=<the first run's> python -m webapp.stack exec -- "
            if args.reuse_catalog
            else "python -m webapp.stack exec --throwaway -- "
        )
        + "python bench/search_latency.py "
        + " ".join(sys.argv[1:]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    say(f"wrote {args.output}")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
