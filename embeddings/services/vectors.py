"""Product vectors: encode a batch of products with one version and write them."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction

from catalog.document import ProductDocument
from catalog.models import Product, ProductImage
from embeddings import runtime, selectors
from embeddings.locks import one_embedder_per_product
from embeddings.models import EmbeddingModel, PendingEmbedding, ProductEmbedding
from embeddings.services.centroids import embedding_model_centroids_update
from embeddings.services.lifecycle import embedding_model_activate
from embeddings.sql import vector_literal


def product_text(product: Product) -> str:
    """The text a model reads for a product (also what training reads): its document."""
    return ProductDocument.of(product).text()


def product_image_primary(product: Product) -> ProductImage | None:
    """The image a product is embedded from: its first ready image with a stored file."""
    return next((image for image in product.ready_images if image.image), None)


def product_image_source(product: Product) -> bytes | str | None:
    """What the encoder reads of a product's embedded photo (`product_image_primary`), or
    None without one."""
    image = product_image_primary(product)
    return None if image is None else _image_source(image)


def _image_source(image: ProductImage) -> bytes | str:
    """A path when the storage has one (the decoder reads it), else the file's bytes."""
    try:
        return str(image.image.path)
    except NotImplementedError:  # remote storages have no local path
        with image.image.open("rb") as handle:
            return bytes(handle.read())


@dataclass
class EmbedBatchResult:
    embedded: list[int] = field(default_factory=list)  # product ids written
    skipped: list[int] = field(default_factory=list)  # up to date, deleted or no image
    image_failed: dict[int, str] = field(default_factory=dict)  # text vector only
    seconds: dict[str, float] = field(default_factory=dict)


_UPSERT = (
    "INSERT INTO embeddings_productembedding "
    "(product_id, model_id, kind, vector, content_hash, created_at) "
    "VALUES (%s, %s, %s, %s::halfvec, %s, now()) "
    "ON CONFLICT (product_id, model_id, kind) DO UPDATE SET "
    "vector = EXCLUDED.vector, content_hash = EXCLUDED.content_hash, created_at = now()"
)


@one_embedder_per_product  # a duplicate batch running beside this one skips (embeddings/locks.py)
def products_embed(
    *,
    product_ids: Sequence[int],
    model: EmbeddingModel,
    force: bool = False,
    encoder: Any = None,
) -> EmbedBatchResult:
    """Compute and store image, text and fused vectors of products by one version.

    Idempotent: products whose vectors already match their `content_hash` are skipped
    (unless `force`), rows are upserted on (product, model, kind), and deleted products are
    ignored. A product whose image cannot be decoded keeps a text vector only.
    """
    result = EmbedBatchResult()
    model.refresh_from_db()
    if not model.is_prepared or model.state not in (
        EmbeddingModel.State.BUILDING,
        EmbeddingModel.State.READY,
        EmbeddingModel.State.ACTIVE,
    ):
        _pending_clear(model=model, product_ids=product_ids)
        result.skipped = list(product_ids)
        return result
    candidates = (
        selectors.products_embeddable()
        if force
        else selectors.products_needing_embedding(model=model, exclude_pending=False)
    )
    products = list(
        candidates.filter(id__in=list(product_ids)).prefetch_related("images").order_by("id")
    )
    sources: list[bytes | str] = []
    todo: list[Product] = []
    for product in products:
        image = product_image_primary(product)
        if image is None:
            continue
        try:
            sources.append(_image_source(image))
        except OSError as error:  # the stored file vanished: text only, like a bad image
            result.image_failed[product.pk] = f"{type(error).__name__}: {error}"
            sources.append(b"")
        todo.append(product)
    done_ids = {p.pk for p in todo}
    result.skipped = [pid for pid in product_ids if pid not in done_ids]
    if todo:
        encoder = encoder or runtime.encoder_for(model)
        started = time.perf_counter()
        vectors = encoder.encode_all(sources, [product_text(p) for p in todo])
        result.seconds = {"all_kinds": time.perf_counter() - started}
        for index, reason in vectors.failed.items():
            result.image_failed.setdefault(todo[index].pk, reason)
        rows: list[tuple[int, str, Any]] = []
        for i, product in enumerate(todo):
            rows.append((product.pk, ProductEmbedding.Kind.TEXT, vectors.text[i]))
        for row, index in enumerate(vectors.indices):
            product_id = todo[index].pk
            rows.append((product_id, ProductEmbedding.Kind.IMAGE, vectors.image[row]))
            rows.append((product_id, ProductEmbedding.Kind.FUSED, vectors.fused[row]))
        hashes = {p.pk: p.content_hash for p in todo}
        result.embedded = _vectors_write(
            model=model, rows=rows, hashes=hashes, image_failed=list(result.image_failed)
        )
    _pending_clear(model=model, product_ids=product_ids)
    if model.state == EmbeddingModel.State.BUILDING:
        embedding_model_progress_update(model=model)
    return result


def _vectors_write(
    *,
    model: EmbeddingModel,
    rows: list[tuple[int, str, Any]],
    hashes: dict[int, str],
    image_failed: list[int],
) -> list[int]:
    """Upsert vector rows in one transaction; return the product ids actually written."""
    with transaction.atomic(), connection.cursor() as cursor:
        # Lock the products that still exist (FOR KEY SHARE: a concurrent delete waits for us
        # and then cascades), so a product deleted meanwhile is skipped, not an FK error.
        cursor.execute(
            "SELECT id FROM catalog_product WHERE id = ANY(%s) FOR KEY SHARE",
            [sorted(hashes)],
        )
        alive = {int(row[0]) for row in cursor.fetchall()}
        # Also lock the version: a concurrent retire must not leave rows behind it.
        cursor.execute(
            "SELECT state FROM embeddings_embeddingmodel WHERE id = %s FOR SHARE", [model.pk]
        )
        state_row = cursor.fetchone()
        if state_row is None or state_row[0] in (
            EmbeddingModel.State.RETIRED,
            EmbeddingModel.State.FAILED,
        ):
            return []
        params = [
            (product_id, model.pk, kind, vector_literal(vector), hashes[product_id])
            for product_id, kind, vector in rows
            if product_id in alive
        ]
        cursor.executemany(_UPSERT, params)
        stale = [pid for pid in image_failed if pid in alive]
        if stale:  # the old image vectors no longer describe the product
            ProductEmbedding.objects.filter(
                model=model,
                product_id__in=stale,
                kind__in=[ProductEmbedding.Kind.IMAGE, ProductEmbedding.Kind.FUSED],
            ).delete()
    return sorted(alive)


def _pending_clear(*, model: EmbeddingModel, product_ids: Iterable[int]) -> None:
    PendingEmbedding.objects.filter(model=model, product_id__in=list(product_ids)).delete()


def embedding_model_progress_update(*, model: EmbeddingModel) -> EmbeddingModel:
    """Record backfill progress; a complete building version becomes `ready` (or active)."""
    progress = selectors.embedding_model_progress(model=model)
    EmbeddingModel.objects.filter(pk=model.pk).update(
        backfill_done=progress.done, backfill_total=progress.total
    )
    model.backfill_done, model.backfill_total = progress.done, progress.total
    if progress.complete and model.state == EmbeddingModel.State.BUILDING and model.is_prepared:
        with transaction.atomic():
            locked = EmbeddingModel.objects.select_for_update().get(pk=model.pk)
            if locked.state == EmbeddingModel.State.BUILDING:
                locked.state = EmbeddingModel.State.READY
                locked.save(update_fields=["state"])
        embedding_model_centroids_update(model=model)
        model.refresh_from_db()
        if model.auto_activate:
            model = embedding_model_activate(model=model)
    return model
