"""Write side of the embedding engine: model versions, their indexes, and product vectors.

Life of a version (blue/green): `embedding_model_register` (web or CLI; no torch) -> a worker
runs `embedding_model_prepare` (loads it, records dimension and checksum, builds its partial
HNSW indexes) -> the sweeper and `products_embed_enqueue` fill its vectors in batches
(`products_embed`) while search keeps reading the active version -> `embedding_model_activate`
switches in one transaction -> the previous version stays `ready` for
`embedding_model_rollback` until `embedding_model_retire` deletes its vectors and indexes.
Ready versions keep following the catalog (new and changed products), behind the active
version in the queue, so a rollback serves fresh vectors (`embedding_queue_priority`).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from django.db import connection, transaction
from django.utils import timezone
from django.utils.text import slugify

from catalog.document import ProductDocument
from catalog.models import Lookbook, Product, ProductImage
from embeddings import runtime, selectors, text_map
from embeddings.locks import one_embedder_per_product
from embeddings.ml import DEFAULT_MODEL_FOLDERS, DEFAULT_MODEL_VERSION
from embeddings.ml.errors import ModelLoadError
from embeddings.models import EmbeddingModel, PendingEmbedding, ProductEmbedding, TextQueryMap

log = logging.getLogger(__name__)

# The current bundled model, by its explicit version: a registry row must name the weights
# its vectors came from, so "default" (which moves with releases) is never registered.
DEFAULT_SPEC = f"default:{DEFAULT_MODEL_VERSION}"
BATCH_SIZE = 64  # products per task: a few seconds of CPU, big enough to batch the model
# At most this many products queued per maintained version at once: the queue stays short,
# so a newly imported product never waits behind a whole backfill.
SWEEP_WINDOW = 1024
KINDS = tuple(ProductEmbedding.Kind.values)
_PREPARE_LOCK = 0x70726570  # advisory lock namespace of version preparation ("prep")


class EmbeddingModelStateError(Exception):
    """The requested life-cycle change is not allowed from the version's current state."""


# ---- registry ------------------------------------------------------------------------------
def _key_for(spec: str) -> str:
    """Return the next free `<slug>-v<n>` key for a spec (default -> default-v1, ...)."""
    base = slugify(spec.replace(":", "-").replace("/", "-"))[:80].strip("-") or "model"
    taken = set(
        EmbeddingModel.objects.filter(key__startswith=f"{base}-v").values_list("key", flat=True)
    )
    numbers = [int(m.group(1)) for k in taken if (m := re.fullmatch(rf"{base}-v(\d+)", k))]
    return f"{base}-v{max(numbers, default=0) + 1}"


def embedding_model_register(
    *, spec: str, key: str | None = None, auto_activate: bool = False
) -> EmbeddingModel:
    """Create a `building` version of `spec` and ask a worker to prepare it.

    Returns at once (no model is loaded here, so the web process never imports torch). The
    first version ever prepared becomes active by itself; later ones are activated by an
    operator, or when their backfill completes if `auto_activate`.
    """
    spec = spec.strip()
    if not spec:
        raise ValueError("a model spec is required")
    model = EmbeddingModel.objects.create(
        key=key or _key_for(spec), spec=spec, auto_activate=auto_activate
    )
    _prepare_later(model)
    return model


def _prepare_later(model: EmbeddingModel) -> None:
    from embeddings.tasks import embedding_model_prepare_task

    model_id = model.pk
    transaction.on_commit(lambda: embedding_model_prepare_task.delay(model_id=model_id))


def embedding_model_prepare(*, model: EmbeddingModel) -> EmbeddingModel:
    """Load a building version, record its dimension and checksum, build its indexes.

    Runs in a worker (imports torch). A spec that cannot be loaded leaves the version
    `failed` with the reason in `error`, never a retry loop. Idempotent.
    """
    model.refresh_from_db()
    if model.state != EmbeddingModel.State.BUILDING or model.is_prepared:
        return model
    with _prepare_lock(model_id=model.pk) as acquired:
        if not acquired:  # a re-sent message while the first is still loading: leave it
            return model
        model.refresh_from_db()
        if model.state != EmbeddingModel.State.BUILDING or model.is_prepared:
            return model
        return _prepare(model)


@contextlib.contextmanager
def _prepare_lock(*, model_id: int) -> Iterator[bool]:
    """Hold a session advisory lock for one version's preparation; yield whether we got it."""
    if connection.in_atomic_block:  # tests in one transaction: nothing runs beside them
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_PREPARE_LOCK, model_id])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_PREPARE_LOCK, model_id])


def _prepare(model: EmbeddingModel) -> EmbeddingModel:
    try:
        encoder = runtime.encoder_for(model)
    except ModelLoadError as error:
        log.error("embedding model %s cannot be loaded: %s", model.key, error)
        model.state = EmbeddingModel.State.FAILED
        model.error = str(error)
        model.save(update_fields=["state", "error"])
        return model
    model.dimension = int(encoder.dim)
    model.weights_sha256 = encoder.weights_sha256
    model.error = ""
    model.save(update_fields=["dimension", "weights_sha256", "error"])
    embedding_model_indexes_create(model=model)
    model.prepared_at = timezone.now()
    model.save(update_fields=["prepared_at"])
    if selectors.embedding_model_active() is None:
        # Nothing is served yet, so there is nothing to keep serving: go live at once and
        # let products become searchable one batch at a time.
        model = embedding_model_activate(model=model, force=True)
    # The sweep records its progress first (an empty catalog makes it ready at once), then
    # queues its backfill.
    embeddings_sweep(models=[model])
    model.refresh_from_db()
    return model


def embedding_model_retry(*, model: EmbeddingModel) -> EmbeddingModel:
    """Put a failed version back to building and ask a worker to prepare it again."""
    with transaction.atomic():
        model = EmbeddingModel.objects.select_for_update().get(pk=model.pk)
        if model.state != EmbeddingModel.State.FAILED:
            raise EmbeddingModelStateError(f"{model.key} is {model.state}, not failed")
        model.state = EmbeddingModel.State.BUILDING
        model.error = ""
        model.save(update_fields=["state", "error"])
        _prepare_later(model)
    return model


def default_model_ensure() -> EmbeddingModel | None:
    """Register the bundled default model when the registry is empty; return it if created.

    A fresh install thus needs no command: the sweeper calls this, a worker prepares the
    model and, being the first, it goes active. Without the default weights on disk the
    version is recorded `failed` with a clear reason (no torch is imported to find out).
    """
    if EmbeddingModel.objects.exists():
        return None
    with transaction.atomic():
        # Two sweepers at once must not both register: lock the table for this decision.
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE embeddings_embeddingmodel IN SHARE ROW EXCLUSIVE MODE")
        if EmbeddingModel.objects.exists():
            return None
        missing = _default_weights_missing()
        if missing:
            return EmbeddingModel.objects.create(
                key=_default_key(),
                spec=DEFAULT_SPEC,
                state=EmbeddingModel.State.FAILED,
                error=missing,
            )
        return embedding_model_register(spec=DEFAULT_SPEC, key=_default_key())


def _default_key() -> str:
    """ "default-v2" for the bundled v2, unless that key is taken (then the next free one)."""
    key = f"default-{DEFAULT_MODEL_VERSION}"
    return _key_for(DEFAULT_SPEC) if EmbeddingModel.objects.filter(key=key).exists() else key


def default_model_upgrade() -> EmbeddingModel | None:
    """Register the current bundled model beside an older one that is still served.

    An install upgraded from a release whose default was v1 keeps serving v1 (its rows were
    renamed "default:v1" by a migration): v2 is registered as a new `building` version that
    backfills beside it, for an operator to evaluate, compare and activate. Once v2 exists
    in any state (retired included: an operator's choice) nothing more is done. Returns the
    version it registered, if any.
    """
    older = EmbeddingModel.objects.filter(
        spec__startswith="default:",
        state__in=[EmbeddingModel.State.ACTIVE, EmbeddingModel.State.READY],
    ).exclude(spec=DEFAULT_SPEC)
    if not older.exists() or EmbeddingModel.objects.filter(spec=DEFAULT_SPEC).exists():
        return None
    if _default_weights_missing():
        return None
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE embeddings_embeddingmodel IN SHARE ROW EXCLUSIVE MODE")
        if EmbeddingModel.objects.filter(spec=DEFAULT_SPEC).exists():
            return None
        return embedding_model_register(spec=DEFAULT_SPEC, key=_default_key())


def _default_model_dir() -> Path:
    # The folder ML core loads `default` from; computed here without importing torch.
    return Path(__file__).resolve().parent / DEFAULT_MODEL_FOLDERS[DEFAULT_MODEL_VERSION]


def _default_weights_missing() -> str:
    """Return why the bundled default model cannot load, or "" when its files are there."""
    folder = _default_model_dir()
    missing = [n for n in ("config.json", "model.safetensors") if not (folder / n).is_file()]
    if not missing:
        return ""
    return (
        f"the bundled default model is not installed: {', '.join(missing)} missing in {folder}. "
        "Train it (python -m embeddings.ml train-default) or register another model with "
        "`manage.py embedding_models register <spec>`; the sweeper retries once it is there."
    )


def _default_model_retry_if_installed() -> None:
    """Retry a failed `default` version once its weights have appeared (e.g. an upgrade)."""
    failed = EmbeddingModel.objects.filter(
        spec=DEFAULT_SPEC, state=EmbeddingModel.State.FAILED
    ).first()
    if failed is not None and not _default_weights_missing():
        embedding_model_retry(model=failed)


# ---- indexes -----------------------------------------------------------------------------
# Two CREATE/DROP INDEX CONCURRENTLY on one table can deadlock (each waits for the other's
# transaction to end), and two workers may prepare versions at once: one lock for all of them.
_INDEX_DDL_LOCK = 0x76697472  # an arbitrary constant of this app ("vitr")


@contextlib.contextmanager
def _index_ddl_lock() -> Iterator[None]:
    if connection.in_atomic_block:  # tests: the transaction already serialises the DDL
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [_INDEX_DDL_LOCK])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_INDEX_DDL_LOCK])


#: HNSW build parameters of every partial index. pgvector's defaults (m 16,
#: ef_construction 64) gave image->image recall@10 0.92-0.93 at ef_search 100 on the 100k
#: bench catalog; m 32, ef_construction 128 gave 0.979 (0.958 at ef_search 40) for a build
#: of 128 s instead of 17-55 s (bench/results/search_latency.json, hnsw_build_sweep_image).
#: Indexes already built keep their parameters until rebuilt (REINDEX or a new version).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 128


def hnsw_index_sql(*, name: str, model_id: int, kind: str, dim: int, concurrently: str) -> str:
    """CREATE INDEX of one version's partial HNSW index of `kind` (the contract's form)."""
    # Identifiers and literals are built from integers and the fixed kind names.
    assert kind in KINDS
    return (
        f'CREATE INDEX {concurrently}IF NOT EXISTS "{name}" '
        "ON embeddings_productembedding "
        f"USING hnsw ((vector::halfvec({int(dim)})) halfvec_cosine_ops) "
        f"WITH (m = {int(HNSW_M)}, ef_construction = {int(HNSW_EF_CONSTRUCTION)}) "
        f"WHERE model_id = {int(model_id)} AND kind = '{kind}'"
    )


def index_name(*, model_id: int, kind: str) -> str:
    """Return the name of the partial HNSW index of one version and kind (the contract)."""
    return f"emb_{int(model_id)}_{kind}_hnsw"


def embedding_model_indexes_create(*, model: EmbeddingModel) -> None:
    """Create the partial HNSW cosine index of each kind of `model` (idempotent).

    CONCURRENTLY, so writes of the active version never wait on a new version's build; that
    needs autocommit, so inside a transaction (tests) the plain form is used.
    """
    if model.dimension is None:
        raise EmbeddingModelStateError(f"{model.key} has no dimension yet (not prepared)")
    dim, model_id = int(model.dimension), int(model.pk)
    concurrently = "" if connection.in_atomic_block else "CONCURRENTLY "
    with _index_ddl_lock(), connection.cursor() as cursor:
        if connection.in_atomic_block:
            # Deferred FK checks pending in this transaction would block CREATE INDEX.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for kind in KINDS:
            name = index_name(model_id=model_id, kind=kind)
            cursor.execute(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = %s",
                [name],
            )
            row = cursor.fetchone()
            if row is not None and row[0]:
                continue
            if row is not None:  # an interrupted CONCURRENTLY build leaves an invalid index
                cursor.execute(f'DROP INDEX {concurrently}IF EXISTS "{name}"')
            cursor.execute(
                hnsw_index_sql(
                    name=name, model_id=model_id, kind=kind, dim=dim, concurrently=concurrently
                )
            )
        if connection.in_atomic_block:
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def embedding_model_indexes_drop(*, model: EmbeddingModel) -> None:
    """Drop the partial indexes of `model` (idempotent)."""
    concurrently = "" if connection.in_atomic_block else "CONCURRENTLY "
    with _index_ddl_lock(), connection.cursor() as cursor:
        for kind in KINDS:
            name = index_name(model_id=int(model.pk), kind=kind)
            cursor.execute(f'DROP INDEX {concurrently}IF EXISTS "{name}"')


# ---- activation, rollback, retirement -------------------------------------------------------
def _locked_registry(model_id: int) -> tuple[EmbeddingModel, list[EmbeddingModel]]:
    """Lock every live version row (in id order, so lockers never deadlock); return target."""
    rows = list(
        EmbeddingModel.objects.select_for_update()
        .exclude(state=EmbeddingModel.State.RETIRED)
        .order_by("id")
    )
    target = next((row for row in rows if row.pk == model_id), None)
    if target is None:
        target = EmbeddingModel.objects.select_for_update().get(pk=model_id)
    return target, rows


def embedding_model_activate(*, model: EmbeddingModel, force: bool = False) -> EmbeddingModel:
    """Make `model` the one active version, atomically; the previous one becomes `ready`.

    One transaction with the registry rows locked, so concurrent activations serialise and
    a search never sees zero or two active versions (the partial unique constraint backs
    this up). A version still building is refused unless `force` (its results would be
    partial); so is a version whose backfill is incomplete.
    """
    with transaction.atomic():
        target, rows = _locked_registry(model.pk)
        if target.state == EmbeddingModel.State.ACTIVE:
            return target
        if target.state not in (EmbeddingModel.State.READY, EmbeddingModel.State.BUILDING):
            raise EmbeddingModelStateError(f"{target.key} is {target.state}; cannot activate it")
        if not target.is_prepared:
            raise EmbeddingModelStateError(f"{target.key} is not loaded and indexed yet")
        if target.state == EmbeddingModel.State.BUILDING and not force:
            progress = selectors.embedding_model_progress(model=target)
            if not progress.complete:
                raise EmbeddingModelStateError(
                    f"{target.key} is still backfilling ({progress.done}/{progress.total}); "
                    "wait, or force the activation"
                )
        now = timezone.now()
        for row in rows:
            if row.state == EmbeddingModel.State.ACTIVE:
                row.state = EmbeddingModel.State.READY
                row.save(update_fields=["state"])
        target.state = EmbeddingModel.State.ACTIVE
        target.activated_at = now
        target.save(update_fields=["state", "activated_at"])
    log.info("embedding model %s is now active", target.key)
    return target


class ActivationGateError(EmbeddingModelStateError):
    """The version does not beat the active one on the held-out split and no reason was given."""


def embedding_model_activate_gated(
    *, model: EmbeddingModel, reason: str = "", user: str = "", force: bool = False
) -> EmbeddingModel:
    """Activate `model` for a person (admin, CLI): only if it beats the active version on
    the catalog's held-out split (`selectors.embedding_model_activation_check`), or with a
    written reason, which is recorded on the version with who gave it and the gate's verdict.

    Automatic paths (first install, rollback, an operator's "activate when ready") use
    `embedding_model_activate` directly.
    """
    check = selectors.embedding_model_activation_check(candidate=model)
    reason = reason.strip()
    if not check.beats and not reason:
        raise ActivationGateError(
            f"{model.key} was not activated: it {check.explanation}. Give a written reason "
            "to activate it anyway (it is recorded)."
            if check.explanation.startswith(("beats", "does not"))
            else f"{model.key} was not activated: {check.explanation}. Give a written reason "
            "to activate it anyway (it is recorded)."
        )
    activated = embedding_model_activate(model=model, force=force)
    if not check.beats:
        when = timezone.now()
        note = f"{when:%Y-%m-%d %H:%M} by {user or 'unknown'}: {reason} ({check.explanation})"
        EmbeddingModel.objects.filter(pk=activated.pk).update(activation_reason=note)
        activated.activation_reason = note
    return activated


def embedding_model_rollback() -> EmbeddingModel:
    """Re-activate the version that was active before the current one; return it."""
    target = selectors.embedding_model_rollback_target()
    if target is None:
        raise EmbeddingModelStateError("no previous version to roll back to (retired or none)")
    return embedding_model_activate(model=target, force=True)


def embedding_model_retire(*, model: EmbeddingModel) -> EmbeddingModel:
    """Retire a version that is not active: delete its vectors and drop its indexes."""
    with transaction.atomic():
        target, _ = _locked_registry(model.pk)
        if target.state == EmbeddingModel.State.ACTIVE:
            raise EmbeddingModelStateError(
                f"{target.key} is active; activate another version before retiring it"
            )
        target.state = EmbeddingModel.State.RETIRED
        target.retired_at = timezone.now()
        target.save(update_fields=["state", "retired_at"])
    # After the state change commits, no task writes for it any more (they re-check).
    embedding_model_indexes_drop(model=target)
    ProductEmbedding.objects.filter(model=target).delete()
    PendingEmbedding.objects.filter(model=target).delete()
    runtime.encoder_forget(target)
    return target


# ---- product vectors ---------------------------------------------------------------------
def product_text(product: Product) -> str:
    """The text a model reads for a product (also what training reads): its document."""
    return ProductDocument.of(product).text()


def _primary_image(product: Product) -> ProductImage | None:
    ready = [
        image
        for image in product.images.all()
        if image.status == ProductImage.Status.READY and image.image
    ]
    return min(ready, key=lambda image: image.position) if ready else None


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


def _halfvec(vector: Any) -> str:
    return "[" + ",".join(f"{float(x):.5g}" for x in vector) + "]"


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
        image = _primary_image(product)
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
        vectors = runtime.encode_items(
            encoder, images=sources, texts=[product_text(p) for p in todo]
        )
        result.seconds = vectors.seconds
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
            (product_id, model.pk, kind, _halfvec(vector), hashes[product_id])
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


# ---- centroids and the text query map (the modality gap) ----------------------------------
#: Refit when a version's fused vector count moved by more than this share.
CENTROIDS_STALE_SHARE = 0.1


def _fused_count(*, model: EmbeddingModel) -> int:
    return ProductEmbedding.objects.filter(model=model, kind=ProductEmbedding.Kind.FUSED).count()


def embedding_model_centroids_update(*, model: EmbeddingModel) -> dict[str, Any]:
    """Store the mean stored vector of each kind of `model` in `model.centroids`, and fit
    its text query map; return the centroids (with the map's stamp when one was fitted).

    Text vectors of a CLIP-style model sit in another region of the sphere than image and
    fused vectors (the modality gap); search sends a text query through the map so the
    HNSW graph of the fused vectors can navigate towards its neighbours. The means show how
    wide the gap is (and were the first correction: a shift by their difference).
    """
    with connection.cursor() as cursor:
        # Averaged as single precision (vector), not halfvec, for an exact enough sum.
        cursor.execute(
            "SELECT kind, count(*), avg(vector::vector)::text FROM embeddings_productembedding "
            "WHERE model_id = %s GROUP BY kind",
            [model.pk],
        )
        rows = cursor.fetchall()
    centroids: dict[str, Any] = {
        kind: [float(x) for x in mean.strip("[]").split(",")] for kind, _count, mean in rows
    }
    centroids["count"] = next((int(n) for kind, n, _ in rows if kind == "fused"), 0)
    centroids["computed_at"] = timezone.now().isoformat()
    fitted = text_query_map_fit(model=model)
    if fitted is not None:
        # Search keys its in-process copy of the map on this stamp (see selectors).
        centroids["text_query_map"] = fitted.fitted_at.isoformat()
    EmbeddingModel.objects.filter(pk=model.pk).update(centroids=centroids)
    model.centroids = centroids
    return centroids


# ---- the text query map ---------------------------------------------------------------------
#: At most this many (text, fused) pairs are fitted on: a uniform sample of larger catalogs.
TEXT_MAP_SAMPLE = 50_000


def _pairs_text_fused(*, model: EmbeddingModel, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Each sampled product's text and fused vectors of `model`, as two (N, D) arrays."""
    with connection.cursor() as cursor:
        # Ordered by a hash of the id: a stable sample spread over the whole catalog.
        # halfvec_send is pgvector's binary form: int16 dim, int16 unused, big-endian halfs.
        cursor.execute(
            "SELECT halfvec_send(t.vector), halfvec_send(f.vector) "
            "FROM embeddings_productembedding t JOIN embeddings_productembedding f "
            "ON f.product_id = t.product_id AND f.model_id = t.model_id AND f.kind = 'fused' "
            "WHERE t.model_id = %s AND t.kind = 'text' "
            "ORDER BY hashint8(t.product_id), t.product_id LIMIT %s",
            [model.pk, limit],
        )
        rows = cursor.fetchall()
    if not rows:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)

    def decode(index: int) -> np.ndarray:
        return np.stack([np.frombuffer(bytes(r[index])[4:], dtype=">f2") for r in rows])

    return decode(0).astype(np.float32), decode(1).astype(np.float32)


def text_query_map_fit(*, model: EmbeddingModel) -> TextQueryMap | None:
    """Fit and store `model`'s text query map on its catalog; None while too few products
    have both vectors (`text_map.enough_pairs`)."""
    text, fused = _pairs_text_fused(model=model, limit=TEXT_MAP_SAMPLE)
    if not text_map.enough_pairs(len(text), int(model.dimension or 0)):
        TextQueryMap.objects.filter(model=model).delete()
        return None
    matrix = text_map.solve(text, fused)
    fit_cosine = float((text_map.apply(matrix, text) * fused).sum(axis=1).mean())
    stored, _ = TextQueryMap.objects.update_or_create(
        model=model,
        defaults={
            "matrix": matrix.astype("<f4").tobytes(),
            "pairs": len(text),
            "fit_cosine": round(fit_cosine, 4),
            "fitted_at": timezone.now(),
        },
    )
    log.info("text query map of %s: %d pairs, fit cosine %.3f", model.key, len(text), fit_cosine)
    return stored


def embedding_model_centroids_refresh(*, model: EmbeddingModel) -> bool:
    """Recompute the centroids when missing or when the vector count moved; True if it did."""
    count = _fused_count(model=model)
    stored = int((model.centroids or {}).get("count", 0))
    if count == 0 or (stored and abs(count - stored) <= CENTROIDS_STALE_SHARE * stored):
        return False
    embedding_model_centroids_update(model=model)
    return True


# ---- queueing ----------------------------------------------------------------------------
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


def embeddings_sweep(
    *, models: Sequence[EmbeddingModel] | None = None, window: int = SWEEP_WINDOW
) -> dict[str, int]:
    """Find products missing current vectors and queue them; return queued counts per key.

    Every maintained version (active, ready, building; the active one first and at the top
    queue priority) gets its stored progress (`backfill_done`/`backfill_total`, what the
    admin and `embedding_models list` show) refreshed and its missing or stale products
    queued. Also registers the default model on a fresh install, retries it once its
    weights appear, and re-sends a lost "prepare" message. Bounded by `window` queued
    products per version, so repeated sweeps never flood the queue.
    """
    if models is None:
        default_model_ensure()
        default_model_upgrade()
        _default_model_retry_if_installed()
        _unprepared_resend()
        models = selectors.embedding_models_maintained()
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


def _unprepared_resend() -> None:
    stale = timezone.now() - selectors.PENDING_LEASE
    for model in EmbeddingModel.objects.filter(
        state=EmbeddingModel.State.BUILDING, prepared_at__isnull=True, created_at__lt=stale
    ):
        _prepare_later(model)


# ---- evaluation and training ---------------------------------------------------------------
def catalog_dataset(*, name: str = "catalog") -> Any:
    """Return an `embeddings.ml.data.ItemDataset` of the embeddable products and their graph.

    Item ids are product ids (as strings). The graph (the dataset's groups) is everything
    the catalog knows about what belongs together: lookbooks ("lookbook:<slug>", published
    or not: an unpublished board is still a merchandiser's judgement), variants of one
    product ("variant:<group_id>", the feed's item_group_id) and, for the attributes the
    retailer maps in VITRINE_GRAPH_ATTRIBUTES, products sharing a value
    ("attr:<name>=<value>"; walked through but not masked from negatives, see
    `TrainConfig.unmasked_groups`). Products record no engagement, so there are no
    co-engagement edges yet.
    """
    from django.conf import settings

    from embeddings.ml.data import Item, ItemDataset

    graph_attributes = list(settings.VITRINE_GRAPH_ATTRIBUTES)
    items = []
    groups: dict[str, list[str]] = {}
    for product in selectors.products_embeddable().prefetch_related("images").order_by("id"):
        image = _primary_image(product)
        if image is None:
            continue
        try:
            path = str(image.image.path)
        except NotImplementedError:
            continue  # training reads files; remote storages are not supported here
        item_id = str(product.pk)
        items.append(Item(item_id, path, product_text(product), product.category or None))
        if product.group_id:
            groups.setdefault(f"variant:{product.group_id}", []).append(item_id)
        for attribute in graph_attributes:
            value = (product.attributes or {}).get(attribute)
            if isinstance(value, str | int | float) and str(value).strip():
                groups.setdefault(f"attr:{attribute}={value}", []).append(item_id)
    known = {item.item_id for item in items}
    for lookbook in Lookbook.objects.prefetch_related("items"):
        members = [str(it.product_id) for it in lookbook.items.all()]
        groups[f"lookbook:{lookbook.slug}"] = [m for m in members if m in known]
    return ItemDataset(
        name=name, items=items, lookbooks={g: m for g, m in groups.items() if len(m) >= 2}
    )


def embedding_model_evaluate(*, model: EmbeddingModel, seed: int | None = None) -> dict[str, Any]:
    """Evaluate `model` on the catalog (products + lookbooks) and store `metrics`; return them.

    Uses `embeddings.ml.evaluation` (cold items and held-out lookbooks drawn from `seed`;
    the default is the catalog's own held-out split, which fine-tuning leaves out).
    """
    from embeddings.ml.evaluation import as_catalogue, evaluate, make_split

    dataset = catalog_dataset()
    if len(dataset) < 4:
        raise ValueError(f"only {len(dataset)} embeddable products: too few to evaluate")
    catalogue = as_catalogue(dataset)
    split = make_split(catalogue, seed=CATALOG_SPLIT_SEED if seed is None else seed)
    evaluation = evaluate(runtime.encoder_for(model), catalogue, split, model_name=model.key)
    metrics = {**evaluation.to_dict(), "evaluated_at": timezone.now().isoformat()}
    EmbeddingModel.objects.filter(pk=model.pk).update(metrics=metrics)
    model.metrics = metrics
    return metrics


#: Seed of the catalog's held-out split: training leaves it out, evaluation and the
#: activation gate score on it, so every version of one catalog is compared on the same one.
CATALOG_SPLIT_SEED = 0


def catalog_split(*, dataset: Any) -> Any:
    """Return the catalog's held-out `Split` (cold items + held-out lookbooks)."""
    from embeddings.ml.evaluation import as_catalogue, make_split

    return make_split(as_catalogue(dataset), seed=CATALOG_SPLIT_SEED)


def embedding_model_train(
    *,
    out_dir: Path,
    key: str | None = None,
    base: str = "new:resnet10t",
    config_overrides: dict[str, Any] | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    report: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> EmbeddingModel:
    """Train a model on the catalog and register it as a new building version (backfill).

    `base` is `TrainConfig.init`: "new:<timm arch>" (scratch image tower + MiniLM text) or a
    model spec to fine-tune. The catalog's held-out split (`catalog_split`) is left out of
    training, so evaluation on it is honest. Runs where it is called (the training worker
    or the command), in minutes to hours; the checkpoint lands in `out_dir`. `report`,
    `progress` and `should_stop` are `embeddings.ml.train.train`'s hooks (`TrainingStopped`
    propagates: the same call later resumes from the saved step).
    """
    from dataclasses import replace

    from django.conf import settings

    from embeddings.ml.evaluation.experiment import training_dataset
    from embeddings.ml.train import TrainConfig, train

    say = report or (lambda line: log.info("%s", line))
    say("reading the catalog's products, lookbooks and variant groups")
    dataset = catalog_dataset()
    if len(dataset) < 2:
        raise ValueError("the catalog has fewer than 2 embeddable products to train on")
    if len(dataset) >= 4:
        split = catalog_split(dataset=dataset)
        dataset = training_dataset(dataset, split)
        say(
            f"held out {len(split.cold_items)} products and {len(split.heldout_lookbooks)} "
            "lookbooks for evaluation"
        )
    # Frozen-tower features are kept between runs (keyed by tower, input and files): a
    # resumed or repeated fine-tune of the same catalog does not run the tower again.
    overrides = {
        "feature_cache_dir": str(settings.DATA_DIR / "cache" / "features"),
        **(config_overrides or {}),
    }
    config = replace(TrainConfig(init=base), **overrides)
    checkpoint = train(
        config,
        dataset,
        Path(out_dir),
        progress=progress,
        report=report,
        should_stop=should_stop,
    )
    say("registering the new version")
    return embedding_model_register(spec=f"checkpoint:{Path(checkpoint).resolve()}", key=key)


def embedding_model_evaluate_start(*, model: EmbeddingModel) -> None:
    """Queue an evaluation of `model` on a worker (for the admin: no torch in the web)."""
    from embeddings.tasks import embedding_model_evaluate_task

    model_id = model.pk
    transaction.on_commit(lambda: embedding_model_evaluate_task.delay(model_id=model_id))
