"""Which arm a shopper's session is in: a stable hash of (experiment, session), so one
session sees one arm on every page and every web process agrees without shared state."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from search.models import Experiment

_BUCKETS = 10_000
_CACHE_SECONDS = 5.0  # a stopped test stops splitting within this long on every process
_cache: tuple[float, Experiment | None] = (float("-inf"), None)


@dataclass(frozen=True)
class ArmSettings:
    """What one arm changes: the model version (empty: the active one) and ranking."""

    experiment_id: int
    arm: str  # "a" or "b"
    model_key: str
    diversify: bool


def experiment_running() -> Experiment | None:
    """The running experiment, read at most every 5 s per process (searches ask often)."""
    global _cache
    now = time.monotonic()
    if now - _cache[0] > _CACHE_SECONDS:
        _cache = (now, Experiment.objects.filter(status=Experiment.Status.RUNNING).first())
    return _cache[1]


def experiment_cache_clear() -> None:
    global _cache
    _cache = (float("-inf"), None)


def experiment_arm(*, experiment: Experiment, session_id: str) -> str:
    digest = hashlib.sha256(f"{experiment.pk}:{session_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % _BUCKETS
    return "b" if bucket < experiment.b_percent * (_BUCKETS // 100) else "a"


def arm_settings(*, session_id: str | None) -> ArmSettings | None:
    """The settings of the session's arm of the running experiment, or None (no test, or
    no session id: a search with no session is not part of any test)."""
    experiment = experiment_running()
    if experiment is None or not session_id:
        return None
    arm = experiment_arm(experiment=experiment, session_id=session_id)
    if arm == "b":
        return ArmSettings(experiment.pk, "b", experiment.b_model_key, experiment.b_diversify)
    return ArmSettings(experiment.pk, "a", experiment.a_model_key, experiment.a_diversify)
