"""Switching versions: activate (the gate people go through), roll back, retire."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from embeddings import runtime, selectors
from embeddings.models import EmbeddingModel, PendingEmbedding, ProductEmbedding
from embeddings.services.errors import EmbeddingModelStateError
from embeddings.services.indexes import embedding_model_indexes_drop

log = logging.getLogger(__name__)


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
