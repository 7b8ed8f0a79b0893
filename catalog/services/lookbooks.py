"""Lookbook writes: from a feed's lookbook rows (after the job's products exist), and the
create, update and delete the REST API makes."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from catalog.ingest.fetching import FetchError, SafeFetcher
from catalog.ingest.imaging import ImageRejectedError, normalise_image
from catalog.ingest.rows import LookbookRow
from catalog.models import Lookbook, LookbookItem, Product
from catalog.services.images import image_bytes_load, lookbook_cover_store


def _lookbook_slug(key: str) -> str:
    slug = slugify(key)[:280]
    if not slug:
        slug = "lookbook-" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return slug


def lookbook_upsert(
    *, row: LookbookRow, product_ids: dict[str, int], base_dir: Path | None, fetcher: SafeFetcher
) -> list[str]:
    """Create or update one lookbook and its items; returns the SKUs it could not find."""
    slug = _lookbook_slug(row.key)
    description = " · ".join(row.attributes.values())[:1000]
    missing = [sku for sku in row.skus if sku not in product_ids]
    with transaction.atomic():
        lookbook, created = Lookbook.objects.select_for_update().get_or_create(
            slug=slug,
            defaults={"title": row.title[:300], "description": description, "is_published": True},
        )
        if not created and (lookbook.title, lookbook.description) != (row.title[:300], description):
            lookbook.title = row.title[:300]
            lookbook.description = description
            lookbook.save(update_fields=["title", "description", "updated_at"])
        wanted = [product_ids[sku] for sku in row.skus if sku in product_ids]
        current = {item.product_id: item for item in lookbook.items.all()}
        LookbookItem.objects.filter(lookbook=lookbook).exclude(product_id__in=wanted).delete()
        changed: list[LookbookItem] = []
        new: list[LookbookItem] = []
        for position, product_id in enumerate(wanted):
            item = current.get(product_id)
            if item is None:
                new.append(
                    LookbookItem(lookbook=lookbook, product_id=product_id, position=position)
                )
            elif item.position != position:
                item.position = position
                changed.append(item)
        LookbookItem.objects.bulk_create(new)
        LookbookItem.objects.bulk_update(changed, ["position"])
    if row.image is not None and lookbook.cover_source != row.image.value:
        with contextlib.suppress(FetchError, ImageRejectedError, OSError):
            data = image_bytes_load(source=row.image.value, base_dir=base_dir, fetcher=fetcher)
            cover = lookbook_cover_store(normalise_image(data))
            Lookbook.objects.filter(id=lookbook.id).update(
                cover=cover, cover_source=row.image.value, updated_at=timezone.now()
            )
    return missing


def _lookbook_items_set(*, lookbook: Lookbook, skus: list[str]) -> None:
    products = Product.objects.in_bulk(skus, field_name="sku")
    missing = [sku for sku in skus if sku not in products]
    if missing:
        raise Product.DoesNotExist(f"unknown SKUs: {', '.join(missing[:20])}")
    lookbook.items.all().delete()
    LookbookItem.objects.bulk_create(
        LookbookItem(lookbook=lookbook, product=products[sku], position=position)
        for position, sku in enumerate(dict.fromkeys(skus))
    )


def lookbook_create(
    *,
    slug: str,
    title: str,
    description: str = "",
    is_published: bool = False,
    skus: list[str] | None = None,
) -> Lookbook:
    """Create a lookbook with its products in the given order (raises Product.DoesNotExist
    naming unknown SKUs)."""
    with transaction.atomic():
        lookbook = Lookbook.objects.create(
            slug=slug, title=title, description=description, is_published=is_published
        )
        _lookbook_items_set(lookbook=lookbook, skus=skus or [])
    return lookbook


def lookbook_update(
    *, lookbook: Lookbook, skus: list[str] | None = None, **fields: Any
) -> Lookbook:
    """Change the given fields; `skus`, when given, replaces the items in that order."""
    unknown = set(fields) - {"slug", "title", "description", "is_published"}
    if unknown:
        raise TypeError(f"unknown lookbook fields: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        for name, value in fields.items():
            setattr(lookbook, name, value)
        lookbook.save()
        if skus is not None:
            _lookbook_items_set(lookbook=lookbook, skus=skus)
    return lookbook


def lookbook_delete(*, lookbook: Lookbook) -> None:
    lookbook.delete()
