"""Ready versions (the rollback target) keep following the catalog, behind the active one.

After an activation the previous version stays `ready`; imports and the sweeper keep its
vectors current, so a rollback serves every product with vectors of its current content.
The active version's work is queued first and at the top queue priority, so keeping the
others fresh never delays a new import's vectors for the version that serves search.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.db.models import F

from catalog.models import Product
from embeddings import runtime, selectors
from embeddings.models import EmbeddingModel, PendingEmbedding, ProductEmbedding
from embeddings.services.lifecycle import (
    embedding_model_activate,
    embedding_model_retire,
    embedding_model_rollback,
)
from embeddings.services.queue import products_embed_enqueue
from embeddings.services.registry import embedding_model_register
from embeddings.services.sweep import embeddings_sweep
from embeddings.services.vectors import products_embed
from embeddings.tasks import embeddings_sweep_task
from tests.embeddings.conftest import ProductFactory, prepare_here, wait_for
from tests.support.processes import WorkerProcess

State = EmbeddingModel.State


def _fresh(model: EmbeddingModel, product_ids: Sequence[int]) -> bool:
    """True when each product has its three vectors by `model`, of its current content."""
    current = ProductEmbedding.objects.filter(
        model=model, product_id__in=list(product_ids), content_hash=F("product__content_hash")
    )
    return current.count() == 3 * len(product_ids)


def _text_vector(model: EmbeddingModel, product: Product) -> tuple[str, np.ndarray]:
    row = ProductEmbedding.objects.get(model=model, product=product, kind="text")
    return row.content_hash, np.asarray(row.vector, dtype=np.float32)


def _register_and_wait(spec: str, key: str, state: str) -> EmbeddingModel:
    """Register a version and let the worker prepare (and backfill) it until `state`."""
    model = embedding_model_register(spec=spec, key=key)
    wait_for(
        lambda: EmbeddingModel.objects.get(pk=model.pk).state in (state, State.FAILED),
        timeout=120,
    )
    model.refresh_from_db()
    assert model.state == state, model.error
    return model


def _batch(send: Callable[[], object]) -> tuple[int, list[int], int | None]:
    """(version id, product ids, priority) of a batch sent on commit: each callback is
    `partial(products_embed_task.apply_async, kwargs=..., priority=...)`."""
    assert isinstance(send, partial)
    kwargs = send.keywords["kwargs"]
    return kwargs["model_id"], kwargs["product_ids"], send.keywords["priority"]


def _change(product: Product, *, title: str, content_hash: str) -> None:
    """What a re-import with a new title does to the row (ingestion recomputes the hash)."""
    Product.objects.filter(pk=product.pk).update(title=title, content_hash=content_hash)
    product.refresh_from_db()


# ---- with a real worker ----------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_ready_version_follows_imports_and_the_sweeper_so_a_rollback_serves_fresh_vectors(
    celery_worker_process: WorkerProcess, checkpoints: dict[str, str], make_product: ProductFactory
) -> None:
    blue = _register_and_wait(checkpoints["a"], "blue", State.ACTIVE)
    products = [make_product() for _ in range(4)]
    products_embed_enqueue(product_ids=[p.pk for p in products])
    wait_for(lambda: _fresh(blue, [p.pk for p in products]), timeout=120)
    green = _register_and_wait(checkpoints["b"], "green", State.READY)  # backfilled beside
    embedding_model_activate(model=green)
    blue.refresh_from_db()
    assert blue.state == State.READY  # the rollback target
    changed = products[0]
    original_hash = changed.content_hash
    old_hash, old_vector = _text_vector(blue, changed)

    # An import: two new products and a changed title, announced by ingestion's hook.
    new = [make_product() for _ in range(2)]
    _change(changed, title="Linen shirt, relaxed fit", content_hash="f" * 64)
    products_embed_enqueue(product_ids=[*(p.pk for p in new), changed.pk])
    imported = [changed.pk, *(p.pk for p in new)]
    wait_for(lambda: _fresh(green, imported) and _fresh(blue, imported), timeout=120)

    # Products changed behind ingestion's back: only the sweeper finds them.
    behind = [make_product() for _ in range(2)]
    _change(products[1], title="Wool coat, long", content_hash="e" * 64)
    embeddings_sweep_task.delay()  # what beat sends every 15 s
    everything = [p.pk for p in (*products, *new, *behind)]
    assert sorted(everything) == sorted(Product.objects.values_list("id", flat=True))
    wait_for(lambda: _fresh(green, everything) and _fresh(blue, everything), timeout=120)

    new_hash, new_vector = _text_vector(blue, changed)
    assert (old_hash, new_hash) == (original_hash, "f" * 64)
    assert not np.allclose(old_vector, new_vector, atol=1e-2)
    # Each task clears its claims just after committing its vectors.
    wait_for(lambda: not PendingEmbedding.objects.exists(), timeout=30)

    # The ready version's freshness, as the sweeper records it and the list shows it.
    embeddings_sweep()
    blue.refresh_from_db()
    assert (blue.state, blue.backfill_done, blue.backfill_total) == (State.READY, 8, 8)
    out = io.StringIO()
    call_command("embedding_models", "list", stdout=out)
    (blue_line,) = [line for line in out.getvalue().splitlines() if line.startswith("blue ")]
    assert " ready " in blue_line and "backfill=8/8 (100%)" in blue_line
    assert "queued=0 " in blue_line

    assert embedding_model_rollback() == blue
    assert selectors.embedding_model_active() == blue
    assert not selectors.products_needing_embedding(model=blue, exclude_pending=False).exists()
    # Search by blue finds a product imported while blue was not active, from its photo...
    photo = Path(new[1].images.get().image.path).read_bytes()
    query = runtime.encode_query_image(photo, model=blue)
    hits = selectors.product_embedding_nearest(vector=query, kind="image", limit=1)
    assert hits[0].product_id == new[1].pk and hits[0].score > 0.99
    # ...and the changed product's text vector encodes its new words, not its old ones.
    words = runtime.encode_query_text(changed.title, model=blue)
    assert float(words @ new_vector) > 0.99 > float(words @ old_vector)


@pytest.mark.django_db(transaction=True)
def test_the_active_version_is_embedded_before_a_ready_versions_queued_backlog(
    celery_worker_process: WorkerProcess, checkpoints: dict[str, str], make_product: ProductFactory
) -> None:
    blue = _register_and_wait(checkpoints["a"], "blue", State.ACTIVE)
    green = _register_and_wait(checkpoints["b"], "green", State.READY)  # empty catalog
    backlog = [make_product().pk for _ in range(96)]
    products_embed_enqueue(product_ids=backlog, models=[blue])
    wait_for(lambda: _fresh(blue, backlog), timeout=120)

    # Twelve batches for the ready version are queued, then a new product is imported.
    # (The worker may already have claimed some of green's products, seen in one CI run:
    # they are queued all the same, just not by this call.)
    products_embed_enqueue(product_ids=backlog, models=[green], batch_size=8)
    pending = PendingEmbedding.objects.filter(model=green, product_id__in=backlog).count()
    done = ProductEmbedding.objects.filter(model=green, product_id__in=backlog, kind="text")
    assert pending + done.count() >= len(backlog)  # every one queued (or already done)
    fresh = make_product()
    assert products_embed_enqueue(product_ids=[fresh.pk]) == 2  # blue and green
    wait_for(lambda: _fresh(blue, [fresh.pk]) and _fresh(green, [*backlog, fresh.pk]), timeout=120)

    # First in, first out, blue's batch would run after all twelve; at the top priority it
    # waits only for the batch already running, so most of green's backlog comes after it.
    blue_at = ProductEmbedding.objects.get(model=blue, product=fresh, kind="text").created_at
    green_later = ProductEmbedding.objects.filter(
        model=green, product_id__in=backlog, kind="text", created_at__gt=blue_at
    ).count()
    assert green_later >= 64, green_later


# ---- in one process --------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_sweep_queues_the_active_version_first_then_ready_then_building_at_lower_priority(
    checkpoints: dict[str, str],
    make_product: ProductFactory,
    django_capture_on_commit_callbacks: Any,
) -> None:
    blue = prepare_here(spec=checkpoints["a"], key="blue")
    green = prepare_here(spec=checkpoints["b"], key="green")  # empty catalog: ready at once
    embedding_model_activate(model=green)  # blue becomes the rollback target
    products = [make_product() for _ in range(70)]
    teal = prepare_here(spec=checkpoints["a"], key="teal")  # products to backfill: building
    for model in (blue, green):
        model.refresh_from_db()
    assert [m.state for m in (green, blue, teal)] == [State.ACTIVE, State.READY, State.BUILDING]
    assert [m.key for m in selectors.embedding_models_maintained()] == ["green", "blue", "teal"]
    PendingEmbedding.objects.all().delete()  # teal's preparation queued its first window

    with django_capture_on_commit_callbacks() as sent:
        queued = embeddings_sweep(window=64)

    assert queued == {"green": 64, "blue": 64, "teal": 64}
    first = [p.pk for p in products[:64]]
    batches = [_batch(callback) for callback in sent]
    assert batches == [(green.pk, first, 0), (blue.pk, first, 3), (teal.pk, first, 6)]
    # The window is per version: a second sweep queues nothing until batches finish.
    with django_capture_on_commit_callbacks() as sent_again:
        assert embeddings_sweep(window=64) == {}
    assert sent_again == []


@pytest.mark.django_db
def test_failed_and_retired_versions_are_not_maintained(
    checkpoints: dict[str, str], make_product: ProductFactory, tmp_path: Path
) -> None:
    blue = prepare_here(spec=checkpoints["a"], key="blue")
    green = prepare_here(spec=checkpoints["b"], key="green")
    broken = prepare_here(spec=f"checkpoint:{tmp_path}", key="broken")
    embedding_model_activate(model=green)
    assert broken.state == State.FAILED
    assert [m.key for m in selectors.embedding_models_maintained()] == ["green", "blue"]

    embedding_model_retire(model=blue)
    assert [m.key for m in selectors.embedding_models_maintained()] == ["green"]
    product = make_product()

    assert products_embed_enqueue(product_ids=[product.pk]) == 1  # green only
    assert embeddings_sweep() == {"green": 0}  # already claimed by the import
    assert set(PendingEmbedding.objects.values_list("model__key", flat=True)) == {"green"}
    # A batch for the retired version still in the queue writes nothing.
    late = products_embed(product_ids=[product.pk], model=blue)
    assert late.embedded == [] and late.skipped == [product.pk]
    assert not ProductEmbedding.objects.filter(model__in=[blue, broken]).exists()
