"""Search latency and HNSW recall on a 100,000-product catalog.

Builds the catalog in the database it is given (run it in a throwaway stack), from real
H&M articles encoded by the model (9,300 of them by default: every article with a photo but
the 200 held out as queries), plus perturbed copies of their vectors up to the target size,
then measures p50/p95/p99 of:

- the vector query alone (`search.vector_sql.nearest_products`), with and without filters;
- text search, image search (encoding included) and similar items end-to-end over HTTP,
  against a real gunicorn serving the app with an API key;

and recall@10 of the HNSW answers against exact search (sequential scan), with and without
filters. Results go to bench/results/search_latency.json.

    .venv/bin/python -m webapp.stack exec --throwaway -- \\
        .venv/bin/python bench/search_latency.py [--products 100000] [--real 9300]

Building takes about 25 minutes here (encoding, then two HNSW indexes). To re-measure after
a query-side change, keep the data directory and pass --reuse-catalog (and --cache for the
encoded vectors): `VITRINE_DATA_DIR=/tmp/bench-data python -m webapp.stack exec -- ...`.

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
import time
from collections.abc import Callable, Sequence
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
        return load(spec), spec, "bundled model" if spec == "default" else spec
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
    vectors: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`count` copies of random rows, each nudged off its source (cosine about 0.9)."""
    sources = rng.integers(0, len(vectors), size=count)
    noise = rng.normal(0, 0.5 / np.sqrt(vectors.shape[1]), size=(count, vectors.shape[1]))
    out = vectors[sources] + noise.astype(np.float32)
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32), sources


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
) -> Any:
    from django.db import connection
    from django.utils import timezone

    from embeddings.models import EmbeddingModel

    rng = np.random.default_rng(seed)
    copies = total - len(articles)
    fused_copies, sources = perturbed(vectors["fused"], copies, rng)
    image_copies = vectors["image"][sources] + (fused_copies - vectors["fused"][sources])
    image_copies /= np.linalg.norm(image_copies, axis=1, keepdims=True)
    origin = np.concatenate([np.arange(len(articles)), sources])
    all_fused = np.concatenate([vectors["fused"], fused_copies])
    all_image = np.concatenate([vectors["image"], image_copies.astype(np.float32)])
    prices = rng.uniform(5, 120, size=total).round(2)
    in_stock = rng.random(total) < 0.85

    now = timezone.now()
    connection.ensure_connection()
    raw = connection.connection
    say(f"COPY {total} products")
    with (
        raw.cursor() as cur,
        cur.copy(
            "COPY catalog_product (sku, title, description, brand, category, group_id, price, "
            "currency, in_stock, url, attributes, content_hash, created_at, updated_at) FROM STDIN"
        ) as copy,
    ):
        for i in range(total):
            a = articles[origin[i]]
            sku = a["article_id"] if i < len(articles) else f"{a['article_id']}-c{i}"
            attributes = a["attributes"]
            copy.write_row(
                (
                    sku,
                    a["prod_name"],
                    a["detail_desc"],
                    "H&M",
                    a["category"],
                    a["product_code"],
                    f"{prices[i]:.2f}",
                    "EUR",
                    bool(in_stock[i]),
                    "",
                    json.dumps(attributes),
                    f"h{i}",
                    now,
                    now,
                )
            )
    ids = [row[0] for row in raw.execute("SELECT id FROM catalog_product ORDER BY id")]
    model = EmbeddingModel.objects.create(
        key=model_key,
        spec=spec,
        dimension=all_fused.shape[1],
        # As preparation records it: without a checksum, the web process would load the
        # weights afresh for every query (a version being prepared must; this one is not).
        weights_sha256=weights_sha256,
        state="active",
        prepared_at=now,
        activated_at=now,
    )
    all_text = vectors["text"][origin]  # copies share their source's words
    say(f"COPY {3 * total} vectors")
    with (
        raw.cursor() as cur,
        cur.copy(
            "COPY embeddings_productembedding (product_id, model_id, kind, vector, content_hash, "
            "created_at) FROM STDIN"
        ) as copy,
    ):
        for kind, matrix in (("fused", all_fused), ("image", all_image), ("text", all_text)):
            for i in range(total):
                copy.write_row((ids[i], model.pk, kind, literal(matrix[i]), f"h{i}", now))
    raw.commit()
    for kind in ("fused", "image", "text"):
        index_build(model=model, kind=kind)
    raw.execute("ANALYZE catalog_product")
    raw.execute("ANALYZE embeddings_productembedding")
    raw.commit()
    return model, np.array(ids), all_fused, all_image


def catalog_existing(model_key: str, total: int) -> Any | None:
    """The bench's model version when an earlier run built its catalog here, else None."""
    from catalog.models import Product
    from embeddings.models import EmbeddingModel

    model = EmbeddingModel.objects.filter(key=model_key).first()
    if model is None or Product.objects.count() != total:
        return None
    return model


def index_exists(*, model: Any, kind: str) -> bool:
    from django.db import connection

    from embeddings.services.indexes import index_name

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_indexes WHERE indexname = %s",
            [index_name(model_id=model.pk, kind=kind)],
        )
        return cursor.fetchone() is not None


def index_build(*, model: Any, kind: str) -> float:
    """(Re)build one partial HNSW index with the embeddings engine's SQL and parameters."""
    from django.db import connection

    from embeddings.services.indexes import (
        HNSW_EF_CONSTRUCTION,
        HNSW_M,
        hnsw_index_sql,
        index_name,
    )

    raw = connection.connection
    name = index_name(model_id=model.pk, kind=kind)
    say(f"building the HNSW index for {kind} (m {HNSW_M}, "
        f"ef_construction {HNSW_EF_CONSTRUCTION})")  # fmt: skip
    start = time.perf_counter()
    raw.execute(f'DROP INDEX IF EXISTS "{name}"')
    raw.execute("SET maintenance_work_mem = '1GB'")
    raw.execute("SET max_parallel_maintenance_workers = 1")
    raw.execute(
        hnsw_index_sql(
            name=name, model_id=model.pk, kind=kind, dim=int(model.dimension), concurrently=""
        )
    )
    raw.commit()
    seconds = time.perf_counter() - start
    say(f"  {seconds:.0f} s")
    return round(seconds, 1)


# --- Measurements ------------------------------------------------------------------------
def exact_nearest(
    *, model: Any, kind: str, vector: np.ndarray, filters: Any, limit: int
) -> list[tuple[int, float]]:
    """The true nearest products: the same query with index scans off (a sequential scan)."""
    from django.db import connection, transaction

    from search.vector_sql import (
        EMBEDDING_TABLE,
        distance_sql,
        embedding_predicate,
        filter_sql,
    )

    where, params = filter_sql(filters)
    sql = (
        f"SELECT e.product_id, {distance_sql(model)} AS d "  # noqa: S608
        f"FROM {EMBEDDING_TABLE} e JOIN catalog_product p ON p.id = e.product_id "
        f"WHERE {embedding_predicate(model, kind)}{where} "
        f"ORDER BY d LIMIT %s"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute(sql, [literal(vector), *params, limit])
        return [(row[0], float(row[1])) for row in cursor.fetchall()]


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
) -> dict[str, Any]:
    """Latency of `nearest_products` (a 24-item page) and recall@10 against exact search.

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
        "plan": query_plan(model=model, kind=kind, vector=queries[0], filters=filters),
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
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from embeddings.services.centroids import embedding_model_centroids_update
    from embeddings.services.indexes import HNSW_EF_CONSTRUCTION, HNSW_M
    from search.selectors import SearchFilters
    from search.services import api_key_create

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
    model = catalog_existing("bench-v1", args.products) if args.reuse_catalog else None
    if model is None:
        model, _ids, _, _ = catalog_build(
            articles=articles,
            vectors=vectors,
            total=args.products,
            model_key="bench-v1",
            spec=spec,
            weights_sha256=encoder.weights_sha256,
            seed=args.seed,
        )
    else:
        say(f"reusing the {args.products}-product catalog of {model.key}")
        model.weights_sha256 = encoder.weights_sha256
        model.save(update_fields=["weights_sha256"])
        if not index_exists(model=model, kind="text"):  # catalogs built before text search used it
            index_build(model=model, kind="text")
    say("centroids and the text query map (fitted on the stored vectors)")
    fit_started = time.perf_counter()
    embedding_model_centroids_update(model=model)
    text_map_seconds = time.perf_counter() - fit_started
    model.refresh_from_db()
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

    text_map_row = model.text_query_map
    text_query = {
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

    categories: dict[str, int] = {}
    for article in articles:
        categories[article["category"]] = categories.get(article["category"], 0) + 1
    rare = sorted(categories.items(), key=lambda kv: kv[1])[len(categories) // 2][0]
    share = categories[rare] / len(articles)
    filtered = SearchFilters(category=[rare], in_stock=True)
    vector_query: dict[str, Any] = {}
    for name, (kind, queries, transform) in query_sets.items() if not args.skip_vector else ():
        say(f"vector query, {name}: unfiltered, then filtered on {rare!r} + in stock")
        vector_query[name] = {
            "unfiltered": vector_benchmarks(
                model=model,
                kind=kind,
                queries=queries,
                filters=SearchFilters(),
                repeats=args.repeats,
                transform=transform,
            ),
            "filtered": vector_benchmarks(
                model=model,
                kind=kind,
                queries=queries,
                filters=filtered,
                repeats=args.repeats,
                transform=transform,
            ),
        }
    sweeps: dict[str, Any] = {}
    ef_values = (40, 64, 100, 200, 400)
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
    configured = (HNSW_M, HNSW_EF_CONSTRUCTION)
    if args.build_sweep:
        pairs = [tuple(int(x) for x in pair.split(":")) for pair in args.build_sweep.split(",")]
        try:
            for m, ef_construction in [*pairs, configured]:
                HNSW_M = m
                HNSW_EF_CONSTRUCTION = ef_construction
                seconds = index_build(model=model, kind="image")
                build_sweep.append(
                    {
                        "m": m,
                        "ef_construction": ef_construction,
                        "build_seconds": seconds,
                        "image_search_sweep": ef_search_sweep(
                            model=model,
                            kind="image",
                            queries=held_image_vectors,
                            values=ef_values,
                            repeats=100,
                        ),
                    }
                )
        finally:
            HNSW_M, HNSW_EF_CONSTRUCTION = configured

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
            "m": HNSW_M,
            "ef_construction": HNSW_EF_CONSTRUCTION,
            "ef_search": settings.VITRINE_HNSW_EF_SEARCH,
            "iterative_scan": "relaxed_order",
        },
        "vector_query": vector_query,
        "filter_used": {"category": rare, "in_stock": True, "category_share": round(share, 4)},
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
