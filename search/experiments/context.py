"""The A/B arm of the request being served, for the search selectors to apply.

Set around a request by `ExperimentArmMiddleware` (from the `session` query parameter the
widgets send), read by `search.selectors` where it picks the model version and the ranking
settings; a ContextVar, so concurrent requests on threads of one process never see each
other's arm. Outside a request, or with no running experiment, nothing changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from django.http import HttpRequest, HttpResponse

from search.events.batches import SESSION_ID
from search.experiments.assignment import ArmSettings, arm_settings

if TYPE_CHECKING:
    from embeddings.models import EmbeddingModel

logger = logging.getLogger(__name__)
_current: ContextVar[ArmSettings | None] = ContextVar("vitrine_experiment_arm", default=None)
ARM_HEADER = "X-Vitrine-Arm"


@contextmanager
def arm_applied(arm: ArmSettings | None) -> Iterator[None]:
    token = _current.set(arm)
    try:
        yield
    finally:
        _current.reset(token)


def arm_model() -> EmbeddingModel | None:
    """The arm's model version when it names one that can serve (active or ready), else
    None (the caller then uses the active version)."""
    arm = _current.get()
    if arm is None or not arm.model_key:
        return None
    from embeddings.models import EmbeddingModel

    model = EmbeddingModel.objects.filter(
        key=arm.model_key, state__in=[EmbeddingModel.State.ACTIVE, EmbeddingModel.State.READY]
    ).first()
    if model is None:
        logger.warning("Experiment arm names model %r, which cannot serve.", arm.model_key)
    return model


def arm_diversify(*, default: bool) -> bool:
    """The arm's ranking setting, or the caller's own when no experiment applies."""
    arm = _current.get()
    return default if arm is None else arm.diversify


class ExperimentArmMiddleware:
    """Applies the session's arm to API calls that carry `session=<the widget's id>`."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = request.GET.get("session", "")
        if not request.path.startswith("/api/") or not SESSION_ID.match(session):
            return self.get_response(request)
        arm = arm_settings(session_id=session)
        with arm_applied(arm):
            response = self.get_response(request)
        if arm is not None:
            response[ARM_HEADER] = f"{arm.experiment_id}:{arm.arm}"
        return response
