"""Product writes: one-statement upserts by SKU from feed rows (image lists, content
hashes), and the single-product create, update and delete the REST API makes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.dispatch import Signal

from catalog.document import ProductDocument
from catalog.ingest.fetching import FetchError, SafeFetcher
from catalog.ingest.rows import ImageRef, ProductRow
from catalog.models import (
    Product,
    ProductImage,
)
from catalog.services.fetch import fetch_policy

#: Sent (after commit) with ``product_ids`` whose embedded content changed and that have a
#: ready image: the embeddings app may connect to it to embed them promptly. The durable
#: contract is still ``Product.content_hash`` versus the hash stored with each vector.
products_need_embedding = Signal()


def product_content_hash(*, product: Product) -> str:
    """The hash of the product's document and image sources, from its stored fields: what
    the importer computes from a feed row, so every writer agrees on "stale"."""
    # Read, not `product.images.all()`: a prefetched list is stale once a writer (the API's
    # `image_urls`) has changed the images.
    sources = (
        list(
            ProductImage.objects.filter(product_id=product.pk)
            .order_by("position")
            .values_list("source_url", flat=True)
        )
        if product.pk
        else []
    )
    return ProductDocument.of(product).content_hash(image_sources=sources)


def product_document_changed(*, product: Product) -> bool:
    """Re-stamp `content_hash` after an edit (API, admin); True when it changed.

    When it did, the embeddings are told after commit, so the product's vectors are
    refreshed at once rather than at the next sweep.
    """
    content_hash = product_content_hash(product=product)
    if content_hash == product.content_hash:
        return False
    product.content_hash = content_hash
    product_id = product.pk
    transaction.on_commit(
        lambda: products_need_embedding.send(sender=Product, product_ids=[product_id])
    )
    return True


def _product_values(row: ProductRow) -> dict[str, Any]:
    attributes = dict(row.attributes)
    for key in ("color", "size", "gender", "google_product_category"):
        value = getattr(row, key)
        if value:
            attributes[key] = value
    category = row.product_type or row.google_product_category
    return {
        "sku": row.sku,
        "title": row.title[:500],
        "description": row.description,
        "brand": row.brand[:200],
        "category": category[:200],
        "group_id": row.item_group_id[:128],
        "price": row.price,
        "currency": row.currency,
        "in_stock": row.availability == "in_stock",
        "url": row.link[:2000],
        "attributes": json.dumps(attributes, sort_keys=True, ensure_ascii=False),
        "content_hash": ProductDocument(
            title=row.title[:500],
            brand=row.brand[:200],
            category=category[:200],
            attributes=attributes,
            description=row.description,
        ).content_hash(image_sources=[ref.value for ref in row.images]),
    }


_UPSERT_COLUMNS = [
    ("sku", "text"),
    ("title", "text"),
    ("description", "text"),
    ("brand", "text"),
    ("category", "text"),
    ("group_id", "text"),
    ("price", "numeric"),
    ("currency", "text"),
    ("in_stock", "boolean"),
    ("url", "text"),
    ("attributes", "text"),
    ("content_hash", "text"),
]


@dataclass(frozen=True)
class UpsertResult:
    created: int
    updated: int
    unchanged: int
    #: sku -> product id, for every row of the batch
    ids: dict[str, int]
    #: products whose embedded content changed (new, or content_hash differs)
    content_changed: set[int]


def product_upsert_batch(*, rows: list[ProductRow]) -> UpsertResult:
    """Insert or update products by SKU in one statement; unchanged rows are not touched.

    ``INSERT .. ON CONFLICT (sku) DO UPDATE .. WHERE (..) IS DISTINCT FROM (..)`` writes
    only rows whose values differ, so a re-imported feed changes nothing (``updated_at``
    included). Then each product's image list is synced: a new or different source at a
    position resets that image to pending; unchanged sources keep their stored files.
    """
    if not rows:
        return UpsertResult(0, 0, 0, {}, set())
    values = [_product_values(r) for r in rows]
    table = Product._meta.db_table
    names = [name for name, _ in _UPSERT_COLUMNS]
    unnest = ", ".join(f"%s::{kind}[]" for _, kind in _UPSERT_COLUMNS)
    select = ", ".join(f"u.{n}::jsonb" if n == "attributes" else f"u.{n}" for n in names)
    updated = [n for n in names if n != "sku"]
    sql = f"""
        INSERT INTO {table} ({", ".join(names)}, created_at, updated_at)
        SELECT {select}, clock_timestamp(), clock_timestamp()
        FROM unnest({unnest}) AS u({", ".join(names)})
        ON CONFLICT (sku) DO UPDATE SET
            {", ".join(f"{n} = EXCLUDED.{n}" for n in updated)}, updated_at = EXCLUDED.updated_at
        WHERE ({", ".join(f"{table}.{n}" for n in updated)})
            IS DISTINCT FROM ({", ".join(f"EXCLUDED.{n}" for n in updated)})
        RETURNING id, sku, (xmax = 0) AS inserted
    """  # noqa: S608 (identifiers come from the model, values are parameters)
    params = [[v[n] for v in values] for n in names]
    with transaction.atomic():
        existing = {
            sku: (pk, content_hash)
            for pk, sku, content_hash in Product.objects.filter(
                sku__in=[v["sku"] for v in values]
            ).values_list("id", "sku", "content_hash")
        }
        old_hashes = {sku: pair[1] for sku, pair in existing.items()}
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            written = cursor.fetchall()
        # Ids of unchanged rows come from the first read; new and updated ones from RETURNING.
        ids = {sku: pair[0] for sku, pair in existing.items()}
        ids.update({sku: pk for pk, sku, _inserted in written})
        created = sum(1 for _id, _sku, inserted in written if inserted)
        changed = {ids[v["sku"]] for v in values if old_hashes.get(v["sku"]) != v["content_hash"]}
        _images_sync(wanted={ids[r.sku]: [ref.value for ref in r.images] for r in rows})
    return UpsertResult(
        created=created,
        updated=len(written) - created,
        unchanged=len(rows) - len(written),
        ids=ids,
        content_changed=changed,
    )


def _images_sync(*, wanted: dict[int, list[str]]) -> None:
    """Make each product's images these sources, in order (product id -> sources)."""
    existing: dict[int, dict[int, ProductImage]] = {}
    for image in ProductImage.objects.filter(product_id__in=wanted.keys()):
        existing.setdefault(image.product_id, {})[image.position] = image
    to_create: list[ProductImage] = []
    to_reset: list[ProductImage] = []
    to_delete: list[int] = []
    for product_id, sources in wanted.items():
        current = existing.get(product_id, {})
        for position, source in enumerate(sources):
            found = current.get(position)
            if found is None:
                to_create.append(
                    ProductImage(product_id=product_id, position=position, source_url=source)
                )
            elif found.source_url != source or found.status == ProductImage.Status.FAILED:
                # A failed image is fetched again whenever its feed is imported again:
                # its cause (a host down, a file fixed at the same URL) may be gone.
                found.source_url = source
                found.status = ProductImage.Status.PENDING
                found.error = ""
                to_reset.append(found)
        to_delete.extend(img.id for pos, img in current.items() if pos >= len(sources))
    if to_delete:
        ProductImage.objects.filter(id__in=to_delete).delete()
    if to_create:
        ProductImage.objects.bulk_create(to_create)
    if to_reset:
        ProductImage.objects.bulk_update(to_reset, ["source_url", "status", "error", "updated_at"])


#: Fields a product is created or updated with through the REST API (and `image_urls`).
PRODUCT_EDITABLE_FIELDS = (
    "title", "description", "brand", "category", "group_id", "price", "currency",
    "in_stock", "url", "attributes",
)  # fmt: skip

#: Products one API batch may create or replace (a request, not a feed: imports take more).
MAX_BATCH_PRODUCTS = 500


def image_url_problems(urls: list[str]) -> dict[int, list[str]]:
    """Why the fetcher would refuse some of these image URLs by their form alone (scheme,
    host, port, allowed hosts), by position; their addresses are checked when fetched."""
    problems: dict[int, list[str]] = {}
    with SafeFetcher(fetch_policy()) as fetcher:
        for position, url in enumerate(urls):
            try:
                fetcher.check_url(url)
            except FetchError as exc:
                problems[position] = [f"This URL cannot be fetched: {exc.reason}."]
    return problems


def product_row_from_api(index: int, data: dict[str, Any]) -> ProductRow:
    """A validated API product as a feed row (`index` is its place in the request)."""
    return ProductRow(
        row=index,
        sku=data["sku"],
        title=data["title"],
        description=data.get("description", ""),
        link=data.get("url", ""),
        images=tuple(ImageRef(kind="url", value=url) for url in data.get("image_urls", [])),
        price=data.get("price"),
        currency=data.get("currency", ""),
        availability="in_stock" if data.get("in_stock", True) else "out_of_stock",
        brand=data.get("brand", ""),
        product_type=data.get("category", ""),
        item_group_id=data.get("group_id", ""),
        attributes=dict(data.get("attributes") or {}),
    )


def _pending_images_send(*, product_ids: list[int]) -> int:
    """After commit, send these products' pending images to a worker, which fetches them
    through the safe fetcher; returns how many."""
    image_ids = list(
        ProductImage.objects.filter(
            product_id__in=product_ids, status=ProductImage.Status.PENDING
        ).values_list("id", flat=True)
    )
    if image_ids:
        from catalog import tasks  # tasks import services: import here, not at the top

        transaction.on_commit(lambda: tasks.product_images_fetch_task.delay(image_ids=image_ids))
    return len(image_ids)


def product_create(
    *, sku: str, title: str, image_urls: list[str] | None = None, **fields: Any
) -> Product:
    """Create a product; its `image_urls` are fetched by a worker after commit."""
    unknown = set(fields) - set(PRODUCT_EDITABLE_FIELDS)
    if unknown:
        raise TypeError(f"unknown product fields: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        product = Product.objects.create(sku=sku, title=title, **fields)
        if image_urls:
            _images_sync(wanted={product.pk: image_urls})
            _pending_images_send(product_ids=[product.pk])
        if product_document_changed(product=product):
            product.save(update_fields=["content_hash"])
    return product


def product_update(
    *, product: Product, image_urls: list[str] | None = None, **fields: Any
) -> Product:
    """Change the given fields (and, given `image_urls`, the photos); the content hash
    follows, so a new text or photo is re-embedded."""
    unknown = set(fields) - {*PRODUCT_EDITABLE_FIELDS, "sku"}
    if unknown:
        raise TypeError(f"unknown product fields: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        for name, value in fields.items():
            setattr(product, name, value)
        if image_urls is not None:
            _images_sync(wanted={product.pk: image_urls})
            _pending_images_send(product_ids=[product.pk])
        product_document_changed(product=product)
        product.save()
    return product


def products_upsert(*, rows: list[ProductRow]) -> tuple[UpsertResult, int]:
    """The API's batch: create or replace products by SKU as feed rows do
    (`product_upsert_batch`), send their new photos to a worker, and tell the embeddings of
    changed products whose photo is ready. Returns the counts and how many photos will be
    fetched."""
    with transaction.atomic():
        result = product_upsert_batch(rows=rows)
        queued = _pending_images_send(product_ids=sorted(result.ids.values()))
        ready = sorted(
            ProductImage.objects.filter(
                product_id__in=result.content_changed,
                position=0,
                status=ProductImage.Status.READY,
            ).values_list("product_id", flat=True)
        )
        if ready:
            transaction.on_commit(
                lambda: products_need_embedding.send(sender=Product, product_ids=ready)
            )
    return result, queued


def product_delete(*, product: Product) -> None:
    product.delete()
