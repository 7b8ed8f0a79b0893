"""Read-side queries for embedding model versions and their vectors.

"Needs embedding" (the contract): a product with a ready image and no vector row of the model
version whose `content_hash` equals the product's current one. All kinds of a product are
written in one transaction, and every product has a text vector (images can fail), so the
text row stands for the whole set.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from django.db import connection
from django.db.models import Case, Exists, F, OuterRef, QuerySet, Value, When
from django.utils import timezone

from catalog.models import Product, ProductImage
from embeddings.models import (
    KINDS,
    EmbeddingModel,
    PendingEmbedding,
    ProductEmbedding,
    TextQueryMap,
    TrainingJob,
)
from embeddings.sql import vector_literal
from webapp.statements import compiled_once

# A queued product whose task has not finished after this long is queued again (a lost
# message, a killed worker past its redelivery): enqueueing is idempotent anyway.
PENDING_LEASE = timedelta(minutes=15)


#: `embedding_model_active`'s statement: every search reads the active version (the results
#: cache's key names it), so it is compiled once per process (`webapp.statements`).
_active_statement = compiled_once(
    lambda: EmbeddingModel.objects.filter(state=EmbeddingModel.State.ACTIVE)[:1]
)


def embedding_model_active() -> EmbeddingModel | None:
    """Return the active model version, or None while none is active (routed like any read
    of the model, a replica included)."""
    sql, params = _active_statement()
    return next(iter(EmbeddingModel.objects.raw(sql, params)), None)


# (model id, fitted-at stamp) -> matrix. Small (D + 2 rows) and read by every text search:
# kept per process, refreshed when the version's centroids name a newer fit.
_text_maps: dict[tuple[int, str], np.ndarray] = {}
_text_maps_lock = threading.Lock()


def text_query_map_matrix(*, model: EmbeddingModel) -> np.ndarray | None:
    """The version's text query map (`embeddings.services.text_query_map_solve`'s layout),
    or None while none is fitted."""
    stamp = (model.centroids or {}).get("text_query_map")
    if not stamp:
        return None
    key = (int(model.pk), str(stamp))
    matrix = _text_maps.get(key)
    if matrix is None:
        row = TextQueryMap.objects.filter(model=model).values_list("matrix", "fitted_at").first()
        if row is None:
            return None
        dim = int(model.dimension or 0)
        matrix = np.frombuffer(bytes(row[0]), dtype="<f4").reshape(dim + 2, dim)
        with _text_maps_lock:
            # One map per version: an older fit of the same version is dropped.
            for stale in [k for k in _text_maps if k[0] == key[0]]:
                del _text_maps[stale]
            _text_maps[key] = matrix
    return matrix


def embedding_model_list(*, include_retired: bool = True) -> QuerySet[EmbeddingModel]:
    """Return model versions, newest first."""
    models = EmbeddingModel.objects.all()
    if not include_retired:
        models = models.exclude(state=EmbeddingModel.State.RETIRED)
    return models


def embedding_model_get(*, key: str) -> EmbeddingModel:
    """Return the model version `key` (EmbeddingModel.DoesNotExist if there is none)."""
    return EmbeddingModel.objects.get(key=key)


def embedding_models_maintained() -> list[EmbeddingModel]:
    """Return the prepared versions whose vectors must follow the catalog, most urgent first.

    Active, then ready (the rollback target first), then building. Ready versions are kept
    fresh because any of them can be served the next moment (a rollback or an activation
    does not wait for a backfill), and a version that missed imports would search by stale
    vectors and miss new products. Building versions come last: nothing is served from them
    until their backfill completes, and that backfill is the bulk of the work, where a ready
    version's share is only the catalog's changes. Failed and retired versions are never
    maintained. The sweeper and import-time enqueueing queue work in this order, and give the
    versions after the active one a lower queue priority (`services.embedding_queue_priority`).
    """
    urgency = Case(
        When(state=EmbeddingModel.State.ACTIVE, then=Value(0)),
        When(state=EmbeddingModel.State.READY, then=Value(1)),
        default=Value(2),
    )
    return list(
        EmbeddingModel.objects.filter(
            state__in=[
                EmbeddingModel.State.ACTIVE,
                EmbeddingModel.State.READY,
                EmbeddingModel.State.BUILDING,
            ],
            prepared_at__isnull=False,
            dimension__isnull=False,
        ).order_by(urgency, F("activated_at").desc(nulls_last=True), "id")
    )


def embedding_model_rollback_target() -> EmbeddingModel | None:
    """Return the version that was active before the current one (ready, not retired)."""
    return (
        EmbeddingModel.objects.filter(state=EmbeddingModel.State.READY, activated_at__isnull=False)
        .order_by("-activated_at")
        .first()
    )


def products_embeddable() -> QuerySet[Product]:
    """Return products that can be embedded: they have a ready image and a content hash."""
    ready_image = ProductImage.objects.filter(
        product=OuterRef("pk"), status=ProductImage.Status.READY
    )
    return Product.objects.exclude(content_hash="").filter(Exists(ready_image))


def products_needing_embedding(
    *, model: EmbeddingModel, exclude_pending: bool = True
) -> QuerySet[Product]:
    """Return embeddable products with no current vector by `model`, in id order.

    With `exclude_pending`, products already queued for `model` (within the lease) are left
    out, so the sweeper never queues them twice.
    """
    current = ProductEmbedding.objects.filter(
        product=OuterRef("pk"),
        model=model,
        kind=ProductEmbedding.Kind.TEXT,
        content_hash=OuterRef("content_hash"),
    )
    products = products_embeddable().exclude(Exists(current))
    if exclude_pending:
        pending = PendingEmbedding.objects.filter(
            product=OuterRef("pk"),
            model=model,
            enqueued_at__gte=timezone.now() - PENDING_LEASE,
        )
        products = products.exclude(Exists(pending))
    return products.order_by("id")


def embedding_model_pending_count(*, model: EmbeddingModel) -> int:
    """Return how many products are queued (within the lease) for `model`."""
    return PendingEmbedding.objects.filter(
        model=model, enqueued_at__gte=timezone.now() - PENDING_LEASE
    ).count()


@dataclass(frozen=True)
class BackfillProgress:
    done: int  # embeddable products with a current vector by the model
    total: int  # embeddable products

    @property
    def complete(self) -> bool:
        return self.done >= self.total

    @property
    def percent(self) -> int:
        """`done` as a whole percentage of `total` (100 for an empty catalog)."""
        return min(100, round(100 * self.done / self.total)) if self.total else 100


def embedding_model_progress(*, model: EmbeddingModel) -> BackfillProgress:
    """Return how many embeddable products have a current vector by `model`."""
    total = products_embeddable().count()
    missing = products_needing_embedding(model=model, exclude_pending=False).count()
    return BackfillProgress(done=total - missing, total=total)


@dataclass(frozen=True)
class Neighbour:
    product_id: int
    score: float  # cosine similarity (1 - cosine distance), higher is better


def product_embedding_nearest(
    *,
    vector: np.ndarray,
    kind: str,
    limit: int = 10,
    model: EmbeddingModel | None = None,
    ef_search: int | None = None,
) -> list[Neighbour]:
    """Return the `limit` products nearest to `vector` among `kind` vectors of `model`.

    `model` defaults to the active version, so a building version never leaks into results.
    The query uses the exact expression and predicate of the partial HNSW index
    (`(vector::halfvec(<dim>)) <=> ... WHERE model_id = <id> AND kind = '<kind>'`).
    """
    model = model or embedding_model_active()
    if model is None or model.dimension is None:
        return []
    if kind not in KINDS:
        raise ValueError(f"unknown vector kind {kind!r}; expected one of {KINDS}")
    dim = int(model.dimension)
    if vector.shape != (dim,):
        raise ValueError(f"query vector has shape {vector.shape}, model {model.key} has {dim}")
    # dim and kind are validated above; the literal predicate is what the partial index has.
    sql = (
        f"SELECT product_id, 1 - ((vector::halfvec({dim})) <=> %s::halfvec({dim})) AS score "  # noqa: S608
        f"FROM embeddings_productembedding WHERE model_id = {int(model.pk)} AND kind = '{kind}' "
        f"ORDER BY (vector::halfvec({dim})) <=> %s::halfvec({dim}) LIMIT %s"
    )
    literal = vector_literal(vector)
    with connection.cursor() as cursor:
        if ef_search:
            cursor.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(ef_search)])
        cursor.execute(sql, [literal, literal, int(limit)])
        rows = cursor.fetchall()
    return [Neighbour(product_id=int(pid), score=float(score)) for pid, score in rows]


def product_embedding_vector(
    *, product_id: int, kind: str, model: EmbeddingModel | None = None
) -> np.ndarray | None:
    """Return a product's stored vector (float32) by `model` (default: active), or None."""
    model = model or embedding_model_active()
    if model is None:
        return None
    row = (
        ProductEmbedding.objects.filter(product_id=product_id, model=model, kind=kind)
        .values_list("vector", flat=True)
        .first()
    )
    return None if row is None else np.asarray(row, dtype=np.float32)


# ---- fine-tuning jobs and the activation gate ------------------------------------------------
def training_job_eta_seconds(*, job: TrainingJob) -> float | None:
    """Seconds left at this attempt's own step rate, or None before it has one."""
    if job.state != TrainingJob.State.RUNNING or job.attempt_started_at is None:
        return None
    done = job.step - job.attempt_start_step
    elapsed = (timezone.now() - job.attempt_started_at).total_seconds()
    if done <= 0 or elapsed <= 0 or not job.total_steps:
        return None
    return max(0.0, (job.total_steps - job.step) * elapsed / done)


@dataclass(frozen=True)
class PlainMetric:
    """One evaluation figure as a merchandiser reads it, for two versions side by side."""

    metric: str  # evaluation name, e.g. "lookbook_completion/recall@10"
    cell: str  # "cold" (products the model never saw in training) or "warm"
    sentence: str  # what it measures, in the catalog's words
    candidate: float | None
    active: float | None

    @property
    def change(self) -> str:
        """ "61% → 78%" (or one side only)."""
        return f"{_pct(self.active)} → {_pct(self.candidate)}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


# The figures shown to merchandisers, in their words; the first one present is the gate's.
PLAIN_METRICS: tuple[tuple[str, str, str], ...] = (
    (
        "lookbook_completion/recall@10",
        "cold",
        "finds the other products of a new product's lookbook or variant group in the first 10",
    ),
    (
        "lookbook_completion/recall@10",
        "warm",
        "finds the other products of a held-out lookbook in the first 10",
    ),
    ("shop_the_look/recall@10", "cold", "finds a look photo's products in the first 10"),
    (
        "text_to_image/recall@10",
        "cold",
        "finds a new product from its own description in the first 10",
    ),
    (
        "image_to_image/category_precision@10",
        "cold",
        "of a new product's 10 most similar products, how many share its category",
    ),
    ("fill_in_the_blank/accuracy", "warm", "picks the missing piece of a lookbook out of 4"),
)


def _value(model: EmbeddingModel | None, metric: str, cell: str) -> float | None:
    if model is None:
        return None
    entry = (model.metrics or {}).get("metrics", {}).get(metric, {}).get(cell)
    value = entry.get("value") if isinstance(entry, dict) else None
    return None if value is None else float(value)


def embedding_model_plain_metrics(
    *, candidate: EmbeddingModel, active: EmbeddingModel | None
) -> list[PlainMetric]:
    """The merchandiser's figures of `candidate` beside `active` (same split only)."""
    same_split = active is not None and (active.metrics or {}).get("split_fingerprint") == (
        candidate.metrics or {}
    ).get("split_fingerprint")
    rows = []
    for metric, cell, sentence in PLAIN_METRICS:
        mine = _value(candidate, metric, cell)
        theirs = _value(active, metric, cell) if same_split else None
        if mine is not None or theirs is not None:
            rows.append(PlainMetric(metric, cell, sentence, mine, theirs))
    return rows


@dataclass(frozen=True)
class ActivationCheck:
    """Whether `candidate` may replace the active version without a written reason."""

    beats: bool
    explanation: str


def embedding_model_activation_check(*, candidate: EmbeddingModel) -> ActivationCheck:
    """Does `candidate` beat the active version on the catalog's held-out split?

    The gate's figure is the first of `PLAIN_METRICS` both versions have on the same split;
    without one (no evaluation yet, or evaluated on another catalog) it does not beat it.
    """
    active = embedding_model_active()
    if active is None or active.pk == candidate.pk:
        return ActivationCheck(True, "there is no other active version")
    if not (candidate.metrics or {}).get("metrics"):
        return ActivationCheck(False, f"{candidate.key} has not been evaluated on this catalog")
    for row in embedding_model_plain_metrics(candidate=candidate, active=active):
        if row.candidate is None or row.active is None:
            continue
        verdict = row.candidate > row.active
        return ActivationCheck(
            verdict,
            f"{'beats' if verdict else 'does not beat'} {active.key}: {row.sentence}: {row.change}",
        )
    return ActivationCheck(
        False, f"{candidate.key} and {active.key} have no evaluation on the same held-out split"
    )
