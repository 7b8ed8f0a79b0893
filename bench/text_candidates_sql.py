"""Time text search's candidate statements (`search.ranking.text_candidates`: the catalog
terms' and full text's SQL) alone, per query, on a catalog of H&M product rows repeated up to
`--products` (real titles, categories, attributes and descriptions; no vectors needed).

The statements whose work grows with the catalog are these (term and word matches), so this
measures them at 100k products in minutes, where `bench/search_latency.py` needs the whole
encoded catalog. Run it twice on the same data directory to compare two commits:

    VITRINE_DATA_DIR=/tmp/candidates-100k python -m webapp.stack exec -- \\
        python bench/text_candidates_sql.py --products 100000 --output /tmp/after.json

Queries: H&M product names and "<colour> <type>" pairs, shuffled (seed 1), as
`bench/text_search_profile.py` asks them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

BASE_DIR = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=Path, default=Path("../shared/datasets/hm/articles.csv"))
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--limit", type=int, default=100, help="the candidate pool")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    sys.path.insert(0, str(BASE_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from catalog.models import Product
    from search import ranking, selectors
    from search.vector_sql import filter_sql
    from search.vocabulary import vocabulary_rebuild

    call_command("migrate", verbosity=0)
    with args.words.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    preset = json.loads((BASE_DIR / "catalog/ingest/presets/hm.json").read_text())
    if Product.objects.count() != args.products:
        Product.objects.all().delete()
        shuffled = rows[:]
        random.Random(0).shuffle(shuffled)
        batch = []
        for i in range(args.products):
            row = shuffled[i % len(shuffled)]
            attributes = {name: row[column] for name, column in preset["attributes"].items()}
            attributes["color"] = row["colour_group_name"]
            batch.append(
                Product(
                    sku=f"{row['article_id']}-{i}",
                    title=row["prod_name"],
                    brand="H&M",
                    category=f"{row['product_group_name']} > {row['product_type_name']}",
                    attributes=attributes,
                    description=row["detail_desc"],
                )
            )
            if len(batch) == 5000:
                Product.objects.bulk_create(batch)
                batch = []
        Product.objects.bulk_create(batch)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE catalog_product")
        print(f"{vocabulary_rebuild()} vocabulary terms", flush=True)

    queries = list(
        dict.fromkeys(
            [r["prod_name"].strip().lower() for r in rows]
            + [f"{r['colour_group_name']} {r['product_type_name']}".lower() for r in rows]
        )
    )
    random.Random(1).shuffle(queries)
    understood = [selectors._understand(q) for q in queries[: 5 + args.queries]]

    def candidates(words: object) -> list[int]:
        return ranking.text_candidates(
            understood=words, filters=selectors.SearchFilters(), limit=args.limit,
            filter_sql=filter_sql,
        )  # fmt: skip

    for words in understood[:5]:  # warm the caches
        candidates(words)
    took, statements, found = [], [], []
    counts: list[int] = []

    def count(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        counts.append(1)
        return execute(sql, params, many, context)

    for words in understood[5:]:
        counts.clear()
        began = time.perf_counter()
        with connection.execute_wrapper(count):
            ids = candidates(words)
        took.append(1000 * (time.perf_counter() - began))
        statements.append(len(counts))
        found.append(len(ids))
    figures = {
        "products": args.products,
        "queries": len(took),
        "candidate_sql_ms": {
            name: round(float(np.percentile(took, q)), 2)
            for name, q in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))
        },
        "mean_ms": round(float(np.mean(took)), 2),
        "statements_a_query_mean": round(float(np.mean(statements)), 2),
        "candidates_a_query_mean": round(float(np.mean(found)), 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(figures, indent=2))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
