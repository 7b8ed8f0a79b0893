"""Where a text search's time goes, in process: latency percentiles, each SQL statement's
share (by its first characters) and the Python profile, over new queries on a built catalog.

Run it against a catalog `bench/search_latency.py` built and kept (its data directory):

    VITRINE_DATA_DIR=/tmp/bench-data python -m webapp.stack exec -- \\
        python bench/text_search_profile.py --words ../shared/datasets/hm/articles.csv

Queries are H&M product names and "<colour> <type>" pairs, shuffled (seed 1), none
repeated, as the HTTP bench asks them; the first 5 warm the process and are not counted.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import csv
import json
import os
import pstats
import random
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=Path, default=Path("../shared/datasets/hm/articles.csv"))
    parser.add_argument("--queries", type=int, default=80)
    parser.add_argument("--statements", type=int, default=12, help="slowest statements shown")
    parser.add_argument("--output", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.db import connection

    from search.selectors import SearchFilters, search_by_text

    with args.words.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    queries = list(
        dict.fromkeys(
            [r["prod_name"].strip().lower() for r in rows]
            + [f"{r['colour_group_name']} {r['product_type_name']}".lower() for r in rows]
        )
    )
    random.Random(1).shuffle(queries)
    statements: dict[str, list[float]] = collections.defaultdict(list)

    def timed(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            statements[" ".join(sql.split())[:110]].append(time.perf_counter() - began)

    def search(query: str) -> None:
        search_by_text(query=query, filters=SearchFilters(), limit=24, diversify=True)

    for query in queries[:5]:
        search(query)
    latencies = []
    profile = cProfile.Profile()
    with connection.execute_wrapper(timed):
        for query in queries[5 : 5 + args.queries]:
            began = time.perf_counter()
            profile.enable()
            search(query)
            profile.disable()
            latencies.append(1000 * (time.perf_counter() - began))
    n = len(latencies)
    print(
        f"{n} queries, ms: p50 {np.percentile(latencies, 50):.1f}  "
        f"p95 {np.percentile(latencies, 95):.1f}  mean {np.mean(latencies):.1f}; "
        f"SQL {1000 * sum(map(sum, statements.values())) / n:.1f} ms a query; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    slowest = sorted(statements.items(), key=lambda kv: -sum(kv[1]))[: args.statements]
    for sql, took in slowest:
        print(
            f"{1000 * sum(took) / n:7.2f} ms a query  {len(took):4d} runs  "
            f"max {1000 * max(took):6.1f} ms  {sql}"
        )
    pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
    if args.output:
        figures = {
            "queries": n,
            "ms": {
                "p50": round(float(np.percentile(latencies, 50)), 1),
                "p95": round(float(np.percentile(latencies, 95)), 1),
                "mean": round(float(np.mean(latencies)), 1),
            },
            "sql_ms_a_query": round(1000 * sum(map(sum, statements.values())) / n, 1),
            "load_average": round(os.getloadavg()[0], 2),
            "slowest_statements": [
                {
                    "sql": sql,
                    "ms_a_query": round(1000 * sum(took) / n, 2),
                    "runs": len(took),
                    "max_ms": round(1000 * max(took), 1),
                }
                for sql, took in slowest
            ],
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
