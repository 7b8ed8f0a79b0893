"""Write side of A/B tests: start, stop, promote."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from embeddings.models import EmbeddingModel
from embeddings.services.lifecycle import embedding_model_activate
from search.experiments.assignment import experiment_cache_clear
from search.models import Experiment


class ExperimentError(ValueError):
    pass


def _model_can_serve(key: str) -> None:
    if not key:
        return
    serving = (EmbeddingModel.State.ACTIVE, EmbeddingModel.State.READY)
    if not EmbeddingModel.objects.filter(key=key, state__in=serving).exists():
        raise ExperimentError(
            f"Model version {key!r} cannot serve searches: it must be active or ready "
            "(backfilled) before shoppers are sent to it."
        )


def experiment_validate(
    *,
    a_model_key: str = "",
    a_diversify: bool = True,
    b_model_key: str = "",
    b_diversify: bool = True,
    b_percent: int = 50,
    minimum_detectable_lift: float = 0.1,
) -> None:
    """Raise ExperimentError when these arms cannot be tested (the admin form asks first)."""
    if (a_model_key, a_diversify) == (b_model_key, b_diversify):
        raise ExperimentError("Arms A and B are the same: change the model or the ranking.")
    if not 1 <= b_percent <= 99:
        raise ExperimentError("The share of sessions in B must be 1 to 99%.")
    if not 0 < minimum_detectable_lift <= 10:
        raise ExperimentError("The lift to detect must be above 0 (e.g. 0.1 for +10%).")
    _model_can_serve(a_model_key)
    _model_can_serve(b_model_key)
    if Experiment.objects.filter(status=Experiment.Status.RUNNING).exists():
        raise ExperimentError("Another experiment is running: stop it first.")


def experiment_start(
    *,
    name: str,
    a_model_key: str = "",
    a_diversify: bool = True,
    b_model_key: str = "",
    b_diversify: bool = True,
    b_percent: int = 50,
    minimum_detectable_lift: float = 0.1,
) -> Experiment:
    """Start splitting sessions; refuses while another test runs, when the arms do not
    differ, or when an arm's model version cannot serve."""
    experiment_validate(
        a_model_key=a_model_key, a_diversify=a_diversify, b_model_key=b_model_key,
        b_diversify=b_diversify, b_percent=b_percent,
        minimum_detectable_lift=minimum_detectable_lift,
    )  # fmt: skip
    with transaction.atomic():
        if Experiment.objects.select_for_update().filter(status=Experiment.Status.RUNNING):
            raise ExperimentError("Another experiment is running: stop it first.")
        experiment = Experiment.objects.create(
            name=name, a_model_key=a_model_key, a_diversify=a_diversify,
            b_model_key=b_model_key, b_diversify=b_diversify, b_percent=b_percent,
            minimum_detectable_lift=minimum_detectable_lift, started_at=timezone.now(),
        )  # fmt: skip
    experiment_cache_clear()
    return experiment


def experiment_stop(*, experiment: Experiment) -> Experiment:
    """Stop splitting (idempotent): every session gets the usual search again within 5 s
    (the per-process cache of the running test). Its events and results stay."""
    if experiment.status == Experiment.Status.RUNNING:
        experiment.status = Experiment.Status.STOPPED
        experiment.ended_at = timezone.now()
        experiment.save(update_fields=["status", "ended_at"])
    experiment_cache_clear()
    return experiment


def experiment_promote(*, experiment: Experiment) -> Experiment:
    """Stop the test and make B's model version the active one for every shopper.

    A ranking setting is not a stored setting (the API takes `diversify` per call), so
    promoting a test of ranking only records the decision: the brand changes its calls.
    """
    with transaction.atomic():
        if experiment.b_model_key:
            model = EmbeddingModel.objects.get(key=experiment.b_model_key)
            embedding_model_activate(model=model)
        experiment.status = Experiment.Status.PROMOTED
        experiment.ended_at = experiment.ended_at or timezone.now()
        experiment.save(update_fields=["status", "ended_at"])
    experiment_cache_clear()
    return experiment
