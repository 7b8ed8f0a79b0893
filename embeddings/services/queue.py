"""Queueing products for embedding: de-duplicated claims, priorities, the sweeper."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from functools import partial

from django.db import connection, transaction

from embeddings import selectors
from embeddings.models import EmbeddingModel, PendingEmbedding
from embeddings.services.centroids import embedding_model_centroids_refresh
from embeddings.services.vectors import embedding_model_progress_update

BATCH_SIZE = 64  # products per task: a few seconds of CPU, big enough to batch the model
# At most this many products queued per maintained version at once: the queue stays short,
# so a newly imported product never waits behind a whole backfill.
SWEEP_WINDOW = 1024


_CLAIM = (
    "INSERT INTO embeddings_pendingembedding (product_id, model_id, enqueued_at) "
    "SELECT id, %s, now() FROM catalog_product WHERE id = ANY(%s) "
    "ON CONFLICT (product_id, model_id) DO UPDATE SET enqueued_at = EXCLUDED.enqueued_at "
    "WHERE embeddings_pendingembedding.enqueued_at < now() - make_interval(secs => %s) "
    "RETURNING product_id"
)


def embedding_leases_release(*, keep_products: Collection[int] = ()) -> int:
    """Forget the queued-embedding leases (but those of `keep_products`, which a live worker
    holds), so the next sweep queues those products again; returns how many were released."""
    deleted, _ = PendingEmbedding.objects.exclude(product_id__in=list(keep_products)).delete()
    connection.close()  # called from a worker signal, outside any task
    return deleted


def _claim(*, model: EmbeddingModel, product_ids: list[int]) -> list[int]:
    """Mark products as queued for `model`; return those not already queued (within lease)."""
    if not product_ids:
        return []
    with connection.cursor() as cursor:
        lease = selectors.PENDING_LEASE.total_seconds()
        cursor.execute(_CLAIM, [model.pk, product_ids, lease])
        return sorted(int(row[0]) for row in cursor.fetchall())


#: Queue priority of each state's embedding batches on a Redis broker, where 0 is served
#: first: kombu's Redis transport keeps one list per priority step (0, 3, 6, 9) and a worker's
#: BRPOP asks them in that order. One `embeddings` queue (and one worker pool) serves every
#: version, so without this a ready or building version's window (up to SWEEP_WINDOW
#: products) would sit ahead of a new import's batch for the active version. With it, the
#: active version's batch waits at most for the one batch already running (workers take
#: one message at a time: acks_late, prefetch multiplier 1). Ready before building: a ready
#: version can be served at the next moment (rollback) and its work is only the catalog's
#: changes; a building version serves nothing until its whole backfill is done.
QUEUE_PRIORITY: dict[str, int] = {
    EmbeddingModel.State.ACTIVE: 0,
    EmbeddingModel.State.READY: 3,
    EmbeddingModel.State.BUILDING: 6,
}


def embedding_queue_priority(*, model: EmbeddingModel) -> int | None:
    """Return the Celery priority of `model`'s embedding batches, or None for the default.

    None on a broker other than Redis: RabbitMQ orders priorities the other way and honours
    them only on queues declared with `x-max-priority` (ours are not), so there the queue
    stays first in, first out and only the order of enqueueing (the active version first,
    see `selectors.embedding_models_maintained`) and the per-version windows hold.
    """
    from embeddings.tasks import products_embed_task

    if not str(products_embed_task.app.conf.broker_url or "").startswith("redis"):
        return None
    return QUEUE_PRIORITY.get(model.state, QUEUE_PRIORITY[EmbeddingModel.State.BUILDING])


def _send_batches(*, model: EmbeddingModel, product_ids: list[int], batch_size: int) -> int:
    from embeddings.tasks import products_embed_task

    # Read at enqueueing: a version activated later keeps the priority of its queued batches
    # until they run (at most one window of products; the sweeper re-queues nothing claimed).
    priority = embedding_queue_priority(model=model)
    for start in range(0, len(product_ids), batch_size):
        chunk = product_ids[start : start + batch_size]
        send: Callable[[], object] = partial(
            products_embed_task.apply_async,
            kwargs={"product_ids": chunk, "model_id": model.pk},
            priority=priority,
        )
        transaction.on_commit(send)
    return len(product_ids)


def products_embed_enqueue(
    *,
    product_ids: Iterable[int],
    models: Sequence[EmbeddingModel] | None = None,
    batch_size: int = BATCH_SIZE,
) -> int:
    """Queue embedding of these products by every maintained version (active, ready, building).

    The public hook for ingestion: call it after a batch's images are ready (inside or
    outside a transaction: tasks are sent on commit). Only products whose vectors are
    missing or stale (content hash changed) are queued, so a price or stock change costs
    nothing. The active version's batches are sent first and at the top priority, so the
    other versions add no wait to it (see `embedding_queue_priority`). Returns how many
    (product, version) pairs were queued.
    """
    ids = sorted({int(pid) for pid in product_ids})
    if not ids:
        return 0
    queued = 0
    for model in models if models is not None else selectors.embedding_models_maintained():
        needing = list(
            selectors.products_needing_embedding(model=model, exclude_pending=False)
            .filter(id__in=ids)
            .values_list("id", flat=True)
        )
        claimed = _claim(model=model, product_ids=needing)
        queued += _send_batches(model=model, product_ids=claimed, batch_size=batch_size)
    return queued


def embeddings_queue_fill(
    *, models: Sequence[EmbeddingModel], window: int = SWEEP_WINDOW
) -> dict[str, int]:
    """Queue the missing or stale products of these versions; return queued counts per key.

    Each version (the active one first, at the top queue priority) gets its stored progress
    (`backfill_done`/`backfill_total`, what the admin and `embedding_models list` show)
    refreshed and its missing or stale products queued. Bounded by `window` queued products
    per version, so repeated calls never flood the queue.
    """
    queued: dict[str, int] = {}
    for model in models:
        # Batches update a building version's progress themselves; active and ready versions
        # only here, every sweep (two counts over the catalog per version). A building version
        # found complete becomes ready here (and active, if it was registered to be).
        model = embedding_model_progress_update(model=model)
        if model.state in (EmbeddingModel.State.ACTIVE, EmbeddingModel.State.READY):
            # The first version goes active before its backfill, and a ready one keeps taking
            # the catalog's changes: keep the centroids and text query map current, so a
            # rollback serves a map fitted on the catalog it searches.
            embedding_model_centroids_refresh(model=model)
        room = window - selectors.embedding_model_pending_count(model=model)
        if room <= 0:
            continue
        ids = list(
            selectors.products_needing_embedding(model=model).values_list("id", flat=True)[:room]
        )
        claimed = _claim(model=model, product_ids=ids)
        queued[model.key] = _send_batches(model=model, product_ids=claimed, batch_size=BATCH_SIZE)
    return queued
