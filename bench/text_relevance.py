"""Text-relevance benchmark: an H&M catalog, queries made from held-out product codes,
judged by the feed's own attributes, with bootstrap confidence intervals.

    .venv/bin/python -m webapp.stack exec --throwaway -- \\
        .venv/bin/python bench/text_relevance.py [--datasets ../shared/datasets]

1. The H&M feed is read by the real importer (`hm` preset) and its product codes split
   at random (seeded) into catalog (70%), tune (15%) and test (15%). Only the catalog's
   rows are stored (`product_upsert_batch`, the importer's own upsert) and embedded by the
   model named by `--spec` (the bundled default unless told: re-run it when the default
   model changes), with the product document's text, as the embedding task does.
2. The tune codes' products make the queries the search calibration is fitted on
   (`search.calibration.search_calibration_fit`, the weights and the thresholds); the
   test codes' products make the queries reported here. Neither is in the catalog.
3. Query sets (every query text once): "<colour> <type>", "<pattern> <type>", free
   phrasings ("little black dress"-like: a filler word, an audience, a colour synonym,
   plurals), every product type alone (for empty answers), unrelated words and gibberish
   (not the calibration's list), unrelated photos (IKEA products and rooms, noise) and
   genuine photos (the test products' own photos, and shoppers' snapshots of clothing from
   the senders the default model held out of its training).
4. Each query runs through `GET /api/v1/search/text` (Django's test client, an API key),
   as a storefront would call it. A hit is right when it has every stated attribute:
   product type, colour (colour group or perceived colour), graphical appearance,
   audience (index group).
5. The ceiling: P@10 of a perfect ranking, min(10, products with every stated attribute)
   / 10 (a held-out pair such as "dark purple hoodies" may have 3 products in the catalog).
6. Beside it: a plain Postgres full-text query over all the feed's fields
   (`websearch_to_tsquery('english')`, ts_rank), equal-weight RRF over the same four
   signals, the uncalibrated default weights, and each signal alone.

Writes bench/results/text_relevance.json and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
RESULTS = BASE_DIR / "bench" / "results" / "text_relevance.json"
BOOTSTRAP = 2000

#: How a shopper names H&M's graphical appearances (the ones a shopper would ask for).
PATTERN_WORDS = {
    "Stripe": "striped",
    "Check": "checked",
    "Dot": "polka dot",
    "Denim": "denim",
    "Lace": "lace",
    "Melange": "melange",
    "All over pattern": "patterned",
    "Glittering/Metallic": "glitter",
    "Sequin": "sequin",
}
#: Colour words of free phrasings, for H&M colour groups a shopper would call otherwise.
COLOUR_WORDS = {"Dark Blue": "navy", "Off White": "cream", "Dark Red": "burgundy"}
AUDIENCE_WORDS = {"Ladieswear": "womens", "Menswear": "mens", "Baby/Children": "kids"}
FILLERS = ("little", "casual", "warm", "cute", "comfy", "smart", "everyday", "nice")
#: Not the calibration's list (search.calibration.UNRELATED_WORDS): other trades' words.
UNRELATED_TEXT = (
    "sofa", "kitchen cabinet", "washing machine", "tyre pressure", "stock market",
    "chicken recipe", "holiday cottage", "electric guitar", "dog lead", "bathroom tiles",
    "solar panel", "oak dining table", "roof repair", "smartphone screen", "espresso machine",
    "hamster cage", "piano lessons", "chess set", "wall paint", "barbecue grill",
    "pension advice", "camping stove", "lawnmower blade", "mattress", "ceiling lamp",
)  # fmt: skip
NOT_A_VALUE = {"unknown", "undefined", "other", "", "transparent"}


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def bootstrap(values: Sequence[float], *, seed: int = 0) -> dict[str, float]:
    """Mean and 95% bootstrap interval over queries."""
    array = np.asarray(values, dtype=np.float64)
    if not len(array):
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    means = array[rng.integers(0, len(array), size=(BOOTSTRAP, len(array)))].mean(axis=1)
    return {
        "mean": round(float(array.mean()), 4),
        "low": round(float(np.quantile(means, 0.025)), 4),
        "high": round(float(np.quantile(means, 0.975)), 4),
        "n": len(array),
    }


def plural(word: str) -> str:
    if word.endswith(("s", "sh", "ch", "x")):
        return word if word.endswith("s") else word + "es"
    return word + "s"


# --- Catalog ------------------------------------------------------------------------------
def articles(datasets: Path) -> dict[str, dict[str, str]]:
    with (datasets / "hm" / "articles.csv").open(newline="", encoding="utf-8") as handle:
        return {row["article_id"]: row for row in csv.DictReader(handle)}


def split_codes(rows: dict[str, dict[str, str]], *, seed: int) -> dict[str, set[str]]:
    codes = sorted({row["product_code"] for row in rows.values()})
    random.Random(seed).shuffle(codes)
    tune, test = int(0.15 * len(codes)), int(0.30 * len(codes))
    return {"tune": set(codes[:tune]), "test": set(codes[tune:test]), "catalog": set(codes[test:])}


def catalog_store(datasets: Path, *, keep: set[str]) -> list[Any]:
    """Store the catalog's rows with the importer's mapping and upsert; their ProductRows."""
    from catalog.ingest.mapping import load_preset
    from catalog.ingest.rows import ProductRow
    from catalog.ingest.sources import open_path
    from catalog.services.products import product_upsert_batch

    feed = open_path(datasets / "hm", mapping=load_preset("hm"))
    rows = [r for r in feed.products() if isinstance(r, ProductRow) and r.item_group_id in keep]
    for start in range(0, len(rows), 1000):
        product_upsert_batch(rows=rows[start : start + 1000])
    return rows


def catalog_embed(*, datasets: Path, spec: str, cache: Path | None) -> Any:
    """Encode every stored product (photo + document text) and store its vectors."""
    from django.db import connection
    from django.utils import timezone

    from catalog.models import Product
    from embeddings import runtime
    from embeddings.models import EmbeddingModel
    from embeddings.services.centroids import embedding_model_centroids_update
    from embeddings.services.indexes import embedding_model_indexes_create
    from embeddings.services.vectors import product_text
    from embeddings.sql import vector_literal

    version = EmbeddingModel(key="bench-v1", spec=spec)
    encoder = runtime.encoder_for(version)
    products = list(Product.objects.order_by("id"))
    paths = [str(datasets / "hm" / "images" / f"{p.sku}.jpg") for p in products]
    texts = [product_text(p) for p in products]
    stamp = f"{spec}-{encoder.weights_sha256[:12]}-{len(products)}"
    cached = cache / f"text_relevance-{stamp}.npz" if cache else None
    if cached is not None and cached.exists():
        say(f"vectors from {cached}")
        loaded = np.load(cached)
        vectors = {kind: loaded[kind] for kind in ("image", "text", "fused")}
        ok = loaded["ok"]
    else:
        say(f"encoding {len(products)} products with {spec}")
        started = time.perf_counter()
        encoded = encoder.encode_all(paths, texts)
        say(f"encoded in {time.perf_counter() - started:.0f} s ({len(encoded.failed)} failed)")
        vectors = {"image": encoded.image, "text": encoded.text, "fused": encoded.fused}
        ok = np.array(encoded.indices)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cached, ok=ok, **vectors)
    now = timezone.now()
    model = EmbeddingModel.objects.create(
        key=version.key, spec=spec, dimension=int(encoder.dim),
        weights_sha256=encoder.weights_sha256, state="active", prepared_at=now, activated_at=now,
    )  # fmt: skip
    raw = (connection.ensure_connection(), connection.connection)[1]
    with (
        raw.cursor() as cursor,
        cursor.copy(
            "COPY embeddings_productembedding (product_id, model_id, kind, vector, content_hash, "
            "created_at) FROM STDIN"
        ) as copy,
    ):
        for kind, matrix in vectors.items():
            for row, index in enumerate(ok.tolist()):
                product = products[index]
                literal = vector_literal(matrix[row].tolist())
                copy.write_row((product.pk, model.pk, kind, literal, product.content_hash, now))
    raw.commit()
    embedding_model_indexes_create(model=model)
    embedding_model_centroids_update(model=model)  # also fits the text query map
    return model


# --- Queries ------------------------------------------------------------------------------
def judged_queries(rows: list[dict[str, str]], *, seed: int) -> dict[str, list[Any]]:
    """Query sets made from held-out articles; each text once (first source wins)."""
    from search.calibration import JudgedQuery

    rng = random.Random(seed)
    sets: dict[str, dict[str, Any]] = {"colour_type": {}, "pattern_type": {}, "free": {}}
    for row in rows:
        kind = row["product_type_name"]
        colour = row["colour_group_name"]
        if kind.lower() in NOT_A_VALUE or "/" in kind:
            continue
        type_word = kind.lower() if rng.random() < 0.5 else plural(kind.lower())
        colours = (colour, row["perceived_colour_master_name"])
        if colour.lower() not in NOT_A_VALUE and not colour.lower().startswith("other"):
            text = f"{colour.lower()} {type_word}"
            wants = {"product_type_name": (kind,), "_colour": colours}
            sets["colour_type"].setdefault(text, JudgedQuery(text, wants, kind="colour_type"))
            audience = AUDIENCE_WORDS.get(row["index_group_name"])
            colour_word = COLOUR_WORDS.get(colour, colour.lower())
            if audience and rng.random() < 0.5:
                free = f"{audience} {colour_word} {type_word}"
                wants = {**wants, "index_group": (row["index_group_name"],)}
            else:
                free = f"{rng.choice(FILLERS)} {colour_word} {type_word}"
            sets["free"].setdefault(free, JudgedQuery(free, wants, kind="free"))
        pattern = PATTERN_WORDS.get(row["graphical_appearance_name"])
        if pattern:
            text = f"{pattern} {type_word}"
            wants = {
                "product_type_name": (kind,),
                "graphical_appearance": (row["graphical_appearance_name"],),
            }
            sets["pattern_type"].setdefault(text, JudgedQuery(text, wants, kind="pattern_type"))
    return {name: list(queries.values()) for name, queries in sets.items()}


def is_right(product: Any, wants: dict[str, tuple[str, ...]]) -> bool:
    """Every stated attribute right; `_colour` is the colour group or the perceived colour."""
    attributes = product.attributes or {}
    for name, values in wants.items():
        allowed = {v.lower() for v in values}
        if name == "_colour":
            have = {
                attributes.get("color", "").lower(),
                attributes.get("perceived_colour", "").lower(),
            }
            if not have & allowed:
                return False
        elif attributes.get(name, "").lower() not in allowed:
            return False
    return True


# --- Methods --------------------------------------------------------------------------------
def api_client() -> Any:
    from django.test import Client

    from search.services import api_key_create

    key = api_key_create(name="bench", rate="1000000/min").plaintext
    return Client(headers={"Authorization": f"Api-Key {key}"}, SERVER_NAME="127.0.0.1")


def through_api(client: Any, text: str) -> dict[str, Any]:
    response = client.get("/api/v1/search/text/", {"q": text, "limit": 10, "fields": "sku"})
    assert response.status_code == 200, response.content[:300]
    body: dict[str, Any] = response.json()
    return body


def fulltext_baseline_build() -> None:
    """All the feed's fields in one plain English tsvector (what the issue compared)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS bench_fulltext AS SELECT id, to_tsvector('english', "
            "title || ' ' || brand || ' ' || category || ' ' || "
            "coalesce((SELECT string_agg(value, ' ') FROM jsonb_each_text(attributes)), '') "
            "|| ' ' || description) AS doc FROM catalog_product"
        )
        cursor.execute(
            "CREATE INDEX IF NOT EXISTS bench_fulltext_doc ON bench_fulltext USING gin (doc)"
        )


def fulltext_baseline(text: str) -> list[int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM bench_fulltext, websearch_to_tsquery('english', %s) q "
            "WHERE doc @@ q ORDER BY ts_rank(doc, q) DESC, id LIMIT 10",
            [text],
        )
        return [int(row[0]) for row in cursor.fetchall()]


def rrf(values: np.ndarray, k: int = 60) -> np.ndarray:
    """Equal-weight reciprocal rank fusion of the signal columns (N, S) -> (N,)."""
    fused = np.zeros(len(values))
    for column in range(values.shape[1]):
        order = np.argsort(-values[:, column], kind="stable")
        ranks = np.empty(len(order))
        ranks[order] = np.arange(1, len(order) + 1)
        fused += 1.0 / (k + ranks)
    return fused


def precision(ids: Sequence[int], products: dict[int, Any], wants: dict[str, Any]) -> float:
    return sum(1 for pid in ids[:10] if pid in products and is_right(products[pid], wants)) / 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=Path(os.environ.get(
        "VITRINE_DATASETS", BASE_DIR.parent / "shared" / "datasets")))  # fmt: skip
    parser.add_argument("--spec", default="default", help="model spec (default: the bundled)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None, help="folder for encoded vectors")
    parser.add_argument("--photos", type=int, default=60, help="photos per photo set")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not (args.datasets / "hm" / "articles.csv").is_file():
        raise SystemExit(f"no H&M set under {args.datasets} (give --datasets)")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver", "127.0.0.1"]
    call_command("migrate", verbosity=0)
    from catalog.models import Product
    from search import calibration, ranking, selectors
    from search.vocabulary import vocabulary_rebuild

    started = time.perf_counter()
    rows = articles(args.datasets)
    codes = split_codes(rows, seed=args.seed)
    if Product.objects.exists():
        raise SystemExit("the database already holds products: run it in a throwaway stack")
    stored = catalog_store(args.datasets, keep=codes["catalog"])
    say(f"catalog: {len(stored)} products of {len(codes['catalog'])} codes")
    model = catalog_embed(datasets=args.datasets, spec=args.spec, cache=args.cache)
    terms = vocabulary_rebuild()
    say(f"vocabulary: {terms} terms")
    held = {name: [r for r in rows.values() if r["product_code"] in codes[name]]
            for name in ("tune", "test")}  # fmt: skip
    tune_sets = judged_queries(held["tune"], seed=args.seed)
    test_sets = judged_queries(held["test"], seed=args.seed + 1)

    # The bench judges colour by two attributes; the calibration's judge reads plain names.
    def for_fit(query: Any) -> Any:
        wants = dict(query.wants)
        colours = wants.pop("_colour", None)
        if colours:
            wants["color"] = colours[:1]
        return calibration.JudgedQuery(query.text, wants, kind=query.kind)

    tune = [for_fit(q) for queries in tune_sets.values() for q in queries]
    say(f"fitting the calibration on {len(tune)} tune queries")
    fitted = calibration.search_calibration_fit(model=model, queries=tune, seed=args.seed)
    say(f"weights {fitted.weights}, text threshold {fitted.text_threshold}, "
        f"image threshold {fitted.image_threshold}")  # fmt: skip

    client = api_client()
    fulltext_baseline_build()
    weights_default = ranking.DEFAULT_WEIGHTS
    alone = {name: {n: float(n == name) for n in ranking.SIGNALS} for name in ranking.SIGNALS}
    report: dict[str, Any] = {"sets": {}}
    # The ceiling: P@10 when the first 10 are all right, so min(10, right products) / 10.
    # Many held-out "<colour> <type>" pairs have fewer than 10 products in the catalog.
    everything = list(Product.objects.only("id", "attributes"))
    latencies: list[float] = []
    genuine_flags: list[float] = []
    for set_name, queries in test_sets.items():
        scores: dict[str, list[float]] = {}
        empty = 0
        for query in queries:
            body = through_api(client, query.text)
            latencies.append(body["processing_time_ms"])
            genuine_flags.append(float(body["no_good_match"]))
            skus = [hit["product"]["sku"] for hit in body["results"]]
            empty += not skus
            by_sku = dict(Product.objects.filter(sku__in=skus).values_list("sku", "id"))
            ids = [by_sku[s] for s in skus]
            _, signals = selectors.text_search_signals(
                query=query.text, filters=selectors.SearchFilters(),
                pool=selectors.CANDIDATE_POOL, model=model,
            )  # fmt: skip
            baseline = fulltext_baseline(query.text)
            products = Product.objects.in_bulk([*ids, *baseline, *signals.product_ids])
            rankings: dict[str, list[int]] = {"vitrine": ids, "fulltext_all_fields": baseline}
            for name, weights in (("default_weights", weights_default),
                                  *((f"{n}_alone", w) for n, w in alone.items())):  # fmt: skip
                rankings[name] = [p for p, _ in ranking.combine(signals=signals, weights=weights)]
            order = np.argsort(-rrf(signals.values), kind="stable")
            rankings["equal_weight_rrf"] = [signals.product_ids[i] for i in order]
            for name, ranked in rankings.items():
                scores.setdefault(name, []).append(precision(ranked, products, query.wants))
            right = sum(1 for product in everything if is_right(product, query.wants))
            scores.setdefault("ceiling", []).append(min(10, right) / 10)
        report["sets"][set_name] = {
            "queries": len(queries),
            "share_of_ceiling": round(
                sum(scores["vitrine"]) / max(sum(scores["ceiling"]), 1e-9), 4
            ),
            "examples": [q.text for q in queries[:8]],
            "empty_answers": empty,
            "precision_at_10_all_stated_right": {
                name: bootstrap(values, seed=args.seed) for name, values in scores.items()
            },
        }
        figures = report["sets"][set_name]["precision_at_10_all_stated_right"]
        say(f"{set_name}: {len(queries)} queries, vitrine {figures['vitrine']}")

    # Every product type the catalog has, alone: never answered empty.
    types = sorted({r.attributes.get("product_type_name", "") for r in stored} - {""})
    empties = [t for t in types if not through_api(client, t.lower())["results"]]
    report["type_alone"] = {"queries": len(types), "empty_answers": len(empties),
                            "empty": empties}  # fmt: skip

    # Unrelated words and gibberish (a generator and seed of its own) are flagged.
    rng = random.Random(args.seed + 99)
    gibberish = ["".join(rng.choice("qwrtzpsdfghjklxcvbnm") + rng.choice("aeiouy")
                         for _ in range(rng.randint(2, 5))) for _ in range(40)]  # fmt: skip
    unrelated_text = [*UNRELATED_TEXT, *gibberish]
    flagged_text = {t: bool(through_api(client, t)["no_good_match"]) for t in unrelated_text}
    report["no_good_match"] = {
        "unrelated_text_flagged": bootstrap([float(v) for v in flagged_text.values()]),
        "unrelated_text_not_flagged": [t for t, v in flagged_text.items() if not v],
        "genuine_text_flagged": bootstrap(genuine_flags),
    }
    report["no_good_match"].update(photo_flags(
        datasets=args.datasets, client=client, count=args.photos, seed=args.seed,
        genuine_skus=[r["article_id"] for r in held["test"]],
    ))  # fmt: skip
    report["text_search_processing_ms"] = {
        "p50": round(float(np.percentile(latencies, 50)), 2),
        "p95": round(float(np.percentile(latencies, 95)), 2),
    }
    report.update(
        model={"key": model.key, "spec": args.spec, "weights_sha256": model.weights_sha256},
        catalog={"products": len(stored), "codes": {k: len(v) for k, v in codes.items()}},
        calibration={
            "weights": fitted.weights,
            "text_threshold": fitted.text_threshold,
            "image_threshold": fitted.image_threshold,
            "report": {k: v for k, v in fitted.report.items() if k != "weights_tried"},
        },
        machine={"cpus": os.cpu_count(), "platform": platform.platform()},
        seconds=round(time.perf_counter() - started, 1),
        command="python -m webapp.stack exec --throwaway -- python bench/text_relevance.py",
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "calibration"}, indent=2))
    say(f"written to {args.output}")


def photo_flags(
    *, datasets: Path, client: Any, count: int, seed: int, genuine_skus: list[str]
) -> dict[str, Any]:
    """Share of photos flagged "no good match": unrelated (IKEA, noise) and genuine."""
    from embeddings.ml.image_classes import synthetic_photos

    rng = random.Random(seed + 7)
    sets: dict[str, list[bytes]] = {}
    for name, folder in (("ikea_products", datasets / "ikea" / "products"),
                         ("ikea_rooms", datasets / "ikea" / "rooms")):  # fmt: skip
        files = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
        sets[name] = [p.read_bytes() for p in rng.sample(files, min(count, len(files)))]
    sets["noise_and_flat"] = synthetic_photos(count // 2, seed=seed + 1234)
    genuine = [datasets / "hm" / "images" / f"{sku}.jpg" for sku in genuine_skus]
    genuine = [p for p in genuine if p.is_file()]
    sets["genuine_hm_held_out"] = [
        p.read_bytes() for p in rng.sample(genuine, min(count, len(genuine)))
    ]
    if (datasets / "clothing" / "images.csv").is_file():  # shoppers' own snapshots
        from embeddings.ml.data import load_clothing
        from embeddings.ml.default_recipe import HOLDOUT_FRACTION, MAX_SENDER_SHARE

        _, held = load_clothing(datasets / "clothing").split_by_lookbook(
            HOLDOUT_FRACTION, seed=0, max_lookbook_share=MAX_SENDER_SHARE
        )  # the senders the default model never trained on
        snapshots = [held.image_file(item) for item in held.items]
        sets["genuine_shoppers_held_out"] = [
            p.read_bytes() for p in rng.sample(snapshots, min(count, len(snapshots)))
        ]
    out: dict[str, Any] = {}
    for name, photos in sets.items():
        flags = []
        for data in photos:
            response = client.post("/api/v1/search/image/", {"image": _upload(data), "limit": 10})
            assert response.status_code == 200, response.content[:300]
            flags.append(float(response.json()["no_good_match"]))
        out[f"photos_{name}_flagged"] = bootstrap(flags)
    return out


def _upload(data: bytes) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    kind = "png" if data[:4] == b"\x89PNG" else "jpeg"
    return SimpleUploadedFile(f"query.{kind}", data, content_type=f"image/{kind}")


if __name__ == "__main__":
    main()
