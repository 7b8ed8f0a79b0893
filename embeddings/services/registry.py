"""The registry of model versions: register, prepare (on a worker), retry; the bundled default."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

from django.db import connection, transaction
from django.utils import timezone
from django.utils.text import slugify

from embeddings import runtime, selectors
from embeddings.ml import DEFAULT_MODEL_FOLDERS, DEFAULT_MODEL_VERSION
from embeddings.ml.errors import ModelLoadError
from embeddings.models import EmbeddingModel
from embeddings.services.errors import EmbeddingModelStateError
from embeddings.services.indexes import embedding_model_indexes_create
from embeddings.services.lifecycle import embedding_model_activate
from embeddings.services.queue import embeddings_queue_fill

log = logging.getLogger(__name__)

# The current bundled model, by its explicit version: a registry row must name the weights
# its vectors came from, so "default" (which moves with releases) is never registered.
DEFAULT_SPEC = f"default:{DEFAULT_MODEL_VERSION}"


_PREPARE_LOCK = 0x70726570  # advisory lock namespace of version preparation ("prep")


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
    embeddings_queue_fill(models=[model])
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
    # The folder ML core loads `default` from (under the `embeddings` package, two levels
    # above this module); computed here without importing torch.
    package = Path(__file__).resolve().parent.parent
    return package / DEFAULT_MODEL_FOLDERS[DEFAULT_MODEL_VERSION]


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


def default_model_retry_if_installed() -> None:
    """Retry a failed `default` version once its weights have appeared (e.g. an upgrade)."""
    failed = EmbeddingModel.objects.filter(
        spec=DEFAULT_SPEC, state=EmbeddingModel.State.FAILED
    ).first()
    if failed is not None and not _default_weights_missing():
        embedding_model_retry(model=failed)


def embedding_models_unprepared_resend() -> None:
    """Send "prepare" again for building versions whose message was lost."""
    stale = timezone.now() - selectors.PENDING_LEASE
    for model in EmbeddingModel.objects.filter(
        state=EmbeddingModel.State.BUILDING, prepared_at__isnull=True, created_at__lt=stale
    ):
        _prepare_later(model)
