"""What a results page's hydration costs the web process: 48 products with their images.

`search.selectors.search_hits` turns a page's (id, score) pairs into products with their
images (`catalog.selectors.products_in_bulk_with_images`), on every page served, from the
results cache or not. Three ways to hydrate the same pages, alternated in one process:

- ``prefetch``: Django's `Product.objects.prefetch_related("images").in_bulk(ids)`, a
  filtered queryset (its own `sql.Query`) built per product to hold its images;
- ``queryset_holder``: the hydration before this change (7e2cb53), its two statements built
  through the ORM, a bare `QuerySet(model=ProductImage)` per product holding its images;
- ``current``: `search_hits` as it is now: the same holders, and the two statements compiled
  once per process (`webapp.statements.rows_by_keys_once`).

Each page's cards are then read as the pages and the API read them (`_card_key`, what the
card memo keys on; `Product.primary_image`), so a lazy load a consumer would trigger shows
in the statement count. It reports each way's process CPU and wall time per page (median
over the repetitions, pages in the same order for each), its paired CPU difference from
``queryset_holder`` (median, bootstrap 95% interval) and the statements per page.

Run (writes bench/results/hydration.json)::

    nice -n 10 .venv/bin/python -m webapp.stack exec --throwaway -- \\
        .venv/bin/python bench/hydration.py --products 960 --repeats 400
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
PAGE = 48


def _catalog(count: int) -> list[int]:
    """`count` products with 1-4 images each, fields filled as an import fills them."""
    from catalog.models import Product, ProductImage

    products = Product.objects.bulk_create(
        Product(
            sku=f"SKU-{i:06d}",
            title=f"Relaxed cotton shirt {i}",
            description="A shirt in soft cotton with a relaxed fit. " * 6,
            brand=f"Brand {i % 17}",
            category=("Shirts", "Trousers", "Dresses")[i % 3],
            group_id=f"G{i // 3}",
            price=f"{19 + i % 80}.95",
            currency="EUR",
            url=f"https://shop.example/p/{i}",
            attributes={"colour": ("red", "blue", "black")[i % 3], "fit": "relaxed"},
            content_hash=f"{i:064x}",
        )
        for i in range(count)
    )
    ProductImage.objects.bulk_create(
        ProductImage(
            product=product,
            position=position,
            source_url=f"https://shop.example/img/{product.sku}/{position}.jpg",
            image=f"products/{product.sku}-{position}.jpg",
            thumbnail=f"products/thumbs/{product.sku}-{position}.jpg",
            width=600,
            height=800,
            sha256=f"{product.pk * 10 + position:064x}",
            status=ProductImage.Status.READY if position != 2 else ProductImage.Status.FAILED,
        )
        for product in products
        for position in range(1 + product.pk % 4)
    )
    return [product.pk for product in products]


def _orm_hydration(ids: list[int]) -> dict[int, Any]:
    """`products_in_bulk_with_images` as it was at 7e2cb53: its two statements built through
    the ORM on every call."""
    from django.db.models import QuerySet

    from catalog.models import Product, ProductImage

    products = Product.objects.in_bulk(list(ids))
    if not products:
        return products
    images: dict[int, list[ProductImage]] = {pid: [] for pid in products}
    for image in ProductImage.objects.filter(product_id__in=list(products)):
        images[image.product_id].append(image)
    product_field = ProductImage._meta.get_field("product")
    cache_name = product_field.remote_field.cache_name
    for pid, product in products.items():
        mine = images[pid]
        for image in mine:
            product_field.set_cached_value(image, product)
        holder: QuerySet[ProductImage] = QuerySet(model=ProductImage)
        holder._deferred_filter = (False, (), {"product": product})
        holder._result_cache = mine
        holder._prefetch_done = True
        product._prefetched_objects_cache = {cache_name: holder}
    return products


def _ways() -> dict[str, Callable[[list[int]], list[Any]]]:
    from catalog.models import Product
    from search.selectors import search_hits

    return {
        "prefetch": lambda ids: list(
            Product.objects.prefetch_related("images").in_bulk(ids).values()
        ),
        "queryset_holder": lambda ids: list(_orm_hydration(ids).values()),
        "current": lambda ids: [hit.product for hit in search_hits([(p, 0.5) for p in ids])],
    }


def _read(products: list[Any]) -> None:
    """What a results page and the API read of each product."""
    from search.templatetags.vitrine import _card_key

    for product in products:
        _card_key(product)
        product.primary_image  # noqa: B018 (the API's and the pages' read)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=960)
    parser.add_argument("--repeats", type=int, default=400, help="pages hydrated per way")
    parser.add_argument("--out", type=Path, default=BASE_DIR / "bench/results/hydration.json")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    call_command("migrate", verbosity=0)
    ids = _catalog(args.products)
    pages = [ids[start : start + PAGE] for start in range(0, len(ids) - PAGE + 1, PAGE)]
    ways = _ways()

    statements: dict[str, int] = {}
    for name, way in ways.items():  # warm-up, and the statement count per page
        with CaptureQueriesContext(connection) as captured:
            _read(way(pages[0]))
        statements[name] = len(captured.captured_queries)

    cpu: dict[str, list[float]] = {name: [] for name in ways}
    wall: dict[str, list[float]] = {name: [] for name in ways}
    for repeat in range(args.repeats):
        page = pages[repeat % len(pages)]
        for name, way in ways.items():
            c0, w0 = time.process_time(), time.perf_counter()
            _read(way(page))
            cpu[name].append((time.process_time() - c0) * 1000)
            wall[name].append((time.perf_counter() - w0) * 1000)

    def summary(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {
            "median": round(statistics.median(ordered), 3),
            "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
            "mean": round(statistics.fmean(ordered), 3),
        }

    results = {
        name: {
            "cpu_ms_per_page": summary(cpu[name]),
            "wall_ms_per_page": summary(wall[name]),
            "statements_per_page": statements[name],
        }
        for name in ways
    }
    # Per repeat, each way's CPU minus the old hydration's on the same page: the median
    # difference and a bootstrap 95% interval of it (the machine is shared, so noisy).
    rng = random.Random(0)
    for name in ways:
        paired = [a - b for a, b in zip(cpu[name], cpu["queryset_holder"], strict=True)]
        medians = sorted(statistics.median(rng.choices(paired, k=len(paired))) for _ in range(1000))
        results[name]["cpu_ms_vs_queryset_holder"] = {
            "median_difference": round(statistics.median(paired), 3),
            "ci95": [round(medians[25], 3), round(medians[974], 3)],
        }
    base = results["queryset_holder"]["cpu_ms_per_page"]["median"]
    now = results["current"]["cpu_ms_per_page"]["median"]
    out = {
        "what": "one results page (48 products, 1-4 images each) hydrated and read as the cards"
        " read it; process CPU and wall per page, median over repeats, ways alternated;"
        " one embedded PostgreSQL on the same machine",
        "command": "nice -n 10 .venv/bin/python -m webapp.stack exec --throwaway -- "
        f".venv/bin/python bench/hydration.py --products {args.products} "
        f"--repeats {args.repeats}",
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=BASE_DIR
        ).stdout.strip(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        " (shared with other sessions' jobs)",
        "products": args.products,
        "page_size": PAGE,
        "repeats": args.repeats,
        "images_per_page": sum(1 + pid % 4 for pid in pages[0]),
        "ways": results,
        "current_vs_queryset_holder_cpu": round(now / base - 1, 3),
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
