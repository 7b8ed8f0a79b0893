"""What the vectors cost in PostgreSQL: bytes per product on disk, in HNSW indexes, and the
build time, for `vector` (float32) against `halfvec` (float16, what Vitrine stores), at the
index parameters search uses. The per-product figures size the memory a retailer needs
(docs/deployment.md): the HNSW index of each kind searched should stay in shared_buffers,
and maintenance_work_mem should hold the graph while it is built.

    python -m webapp.stack exec --throwaway -- python bench/vector_storage.py --rows 100000

Vectors are random unit vectors: storage and build cost depend on the dimension and the row
count, not on what the vectors mean (recall is `bench/search_latency.py`'s business).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import psycopg

HNSW_M, HNSW_EF_CONSTRUCTION = 32, 128  # as embeddings registers its indexes
RESULTS = Path(__file__).parent / "results" / "vector_storage.json"


def _size(connection: psycopg.Connection, relation: str) -> int:
    row = connection.execute("SELECT pg_total_relation_size(%s)", [relation]).fetchone()
    return int(row[0]) if row else 0


def measure(connection: psycopg.Connection, *, kind: str, rows: int, dim: int) -> dict:
    table = f"bench_{kind}"
    connection.execute(f"DROP TABLE IF EXISTS {table}")
    connection.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, v {kind}({dim}))")
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    with connection.cursor().copy(f"COPY {table} (id, v) FROM STDIN") as copy:
        for start in range(0, rows, 10_000):
            block = rng.standard_normal((min(10_000, rows - start), dim)).astype(np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            for offset, vector in enumerate(block):
                copy.write_row((start + offset, "[" + ",".join(f"{x:.5f}" for x in vector) + "]"))
    load_s = time.perf_counter() - started
    connection.execute(f"VACUUM ANALYZE {table}")
    table_bytes = _size(connection, table)
    ops = "halfvec_cosine_ops" if kind == "halfvec" else "vector_cosine_ops"
    connection.execute("SET maintenance_work_mem = '2GB'")
    connection.execute(f"SET max_parallel_maintenance_workers = {os.cpu_count() or 1}")
    started = time.perf_counter()
    connection.execute(
        f"CREATE INDEX {table}_hnsw ON {table} USING hnsw (v {ops}) "
        f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
    )
    build_s = time.perf_counter() - started
    index_bytes = _size(connection, f"{table}_hnsw")
    connection.execute(f"DROP TABLE {table}")
    return {
        "type": kind,
        "rows": rows,
        "dimension": dim,
        "load_s": round(load_s, 1),
        "hnsw_build_s": round(build_s, 1),
        "table_bytes_per_row": round(table_bytes / rows),
        "hnsw_bytes_per_row": round(index_bytes / rows),
        "table_mb": round(table_bytes / 2**20, 1),
        "hnsw_mb": round(index_bytes / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--types", nargs="+", default=["halfvec", "vector"])
    args = parser.parse_args()
    figures = []
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as connection:
        connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        for dim in args.dims:
            for kind in args.types:
                result = measure(connection, kind=kind, rows=args.rows, dim=dim)
                print(json.dumps(result), flush=True)
                figures.append(result)
    RESULTS.write_text(
        json.dumps(
            {
                "figures": figures,
                "hnsw": {"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION},
                "machine": {
                    "cpus": os.cpu_count(),
                    "load_average_at_end": os.getloadavg(),
                    "platform": platform.platform(),
                },
                "command": "python -m webapp.stack exec --throwaway -- "
                f"python bench/vector_storage.py --rows {args.rows}",
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
