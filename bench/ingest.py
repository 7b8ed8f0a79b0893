"""Ingestion benchmark on the H&M set: upsert rows/s and image fetch+normalise images/s.

    python -m webapp.stack exec --throwaway -- python bench/ingest.py [--dataset DIR]

Writes bench/results/ingest.json. The upsert figure covers product_upsert_batch (one
INSERT .. ON CONFLICT per 500 rows, image rows synced) on an empty table, then the same
rows again (the no-op re-import). The image figure is one process on one core: read the
local file, normalise (decode, orient, re-encode + thumbnail), store content-addressed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")


def main() -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test.utils import override_settings

    from catalog.ingest.imaging import normalise_image
    from catalog.ingest.rows import ProductRow
    from catalog.ingest.sources import load_mapping, open_path
    from catalog.models import Product, ProductImage
    from catalog.services.images import image_store
    from catalog.services.jobs import CHUNK_SIZE
    from catalog.services.products import product_upsert_batch

    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default=str(Path(settings.VITRINE_DATASETS) / "hm"))
    parser.add_argument("--images", type=int, default=2000, help="images to normalise")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ingest.json"))
    args = parser.parse_args()
    dataset = Path(args.dataset)
    if not (dataset / "articles.csv").is_file():
        sys.exit(f"H&M dataset not found at {dataset} (pass --dataset or set VITRINE_DATASETS)")

    call_command("migrate", verbosity=0)
    if Product.objects.exists():
        sys.exit("the database already holds products: run inside `webapp.stack exec --throwaway`")

    started = time.perf_counter()
    feed = open_path(dataset, mapping=load_mapping(preset="hm"))
    rows = [r for r in feed.products() if isinstance(r, ProductRow)]
    parse_s = time.perf_counter() - started

    def upsert_all() -> float:
        t0 = time.perf_counter()
        for start in range(0, len(rows), CHUNK_SIZE):
            product_upsert_batch(rows=rows[start : start + CHUNK_SIZE])
        return time.perf_counter() - t0

    insert_s = upsert_all()
    noop_s = upsert_all()
    assert Product.objects.count() == len(rows)

    paths = [dataset / ref.value for r in rows[: args.images] for ref in r.images[:1]]
    with tempfile.TemporaryDirectory() as media, override_settings(MEDIA_ROOT=media):
        t0 = time.perf_counter()
        for path in paths:
            image_store(normalise_image(path.read_bytes()))
        image_s = time.perf_counter() - t0

    results = {
        "dataset": "hm",
        "rows": len(rows),
        "parse_rows_per_s": round(len(rows) / parse_s),
        "upsert_insert_rows_per_s": round(len(rows) / insert_s),
        "upsert_noop_rows_per_s": round(len(rows) / noop_s),
        "images": len(paths),
        "images_per_s_one_core": round(len(paths) / image_s, 1),
        "image_rows": ProductImage.objects.count(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
