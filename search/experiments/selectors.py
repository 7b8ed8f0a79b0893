"""Per-arm results of an A/B test, computed from the stored events.

The unit is the session, as the split is: a session counts as exposed when it saw at
least one Vitrine surface (an impression), as clicked when it also clicked one, as carted
when it also added to cart. Rates per session are independent draws; rates per impression
would not be (one shopper's impressions move together) and their intervals would be too
narrow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from django.db import connection

from search.models import Experiment

ALPHA = 0.05
POWER = 0.8
_Z = NormalDist().inv_cdf(1 - ALPHA / 2)  # 1.96
_Z_POWER = NormalDist().inv_cdf(POWER)  # 0.84
#: The click-through rate assumed for sizing before arm A has any sessions.
PRIOR_RATE = 0.05


@dataclass(frozen=True)
class Rate:
    successes: int
    trials: int
    low: float  # Wilson 95% interval
    high: float

    @property
    def value(self) -> float:
        return self.successes / self.trials if self.trials else 0.0


def wilson_interval(successes: int, trials: int) -> Rate:
    """The proportion with its Wilson score interval (sound at small counts and near 0)."""
    if trials == 0:
        return Rate(0, 0, 0.0, 1.0)
    p = successes / trials
    denominator = 1 + _Z**2 / trials
    centre = (p + _Z**2 / (2 * trials)) / denominator
    half = _Z * math.sqrt(p * (1 - p) / trials + _Z**2 / (4 * trials**2)) / denominator
    return Rate(successes, trials, max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Difference:
    """B minus A, with a 95% interval and the two-sided p-value of a two-proportion z-test."""

    value: float
    low: float
    high: float
    p_value: float


def rate_difference(a: Rate, b: Rate) -> Difference | None:
    if not a.trials or not b.trials:
        return None
    diff = b.value - a.value
    spread = math.sqrt(a.value * (1 - a.value) / a.trials + b.value * (1 - b.value) / b.trials)
    pooled = (a.successes + b.successes) / (a.trials + b.trials)
    pooled_spread = math.sqrt(pooled * (1 - pooled) * (1 / a.trials + 1 / b.trials))
    p_value = 2 * (1 - NormalDist().cdf(abs(diff) / pooled_spread)) if pooled_spread else 1.0
    return Difference(diff, diff - _Z * spread, diff + _Z * spread, p_value)


def sessions_needed_per_arm(*, baseline: float, relative_lift: float) -> int:
    """Sessions each arm needs to detect `baseline` -> `baseline * (1 + lift)` with a
    two-sided test at 5% and 80% power (the normal approximation for two proportions)."""
    p1 = min(max(baseline, 1e-4), 0.9999)
    p2 = min(p1 * (1 + relative_lift), 0.9999)
    if p2 == p1:
        return 0
    mean = (p1 + p2) / 2
    numerator = _Z * math.sqrt(2 * mean * (1 - mean)) + _Z_POWER * math.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2)
    )
    return math.ceil(numerator**2 / (p2 - p1) ** 2)


@dataclass(frozen=True)
class ArmResult:
    arm: str
    model_key: str
    diversify: bool
    sessions: int  # exposed sessions
    ctr: Rate
    atc: Rate
    sessions_still_needed: int


@dataclass(frozen=True)
class ExperimentResults:
    experiment: Experiment
    arms: list[ArmResult]
    ctr_difference: Difference | None
    atc_difference: Difference | None
    sessions_needed_per_arm: int


_SQL = """
WITH sessions AS (
    SELECT session_id, arm,
           bool_or(type = 'impression') AS exposed,
           bool_or(type = 'click') AS clicked,
           bool_or(type = 'add_to_cart') AS carted
    FROM search_event
    WHERE experiment_id = %s AND received_at >= %s
    GROUP BY session_id, arm
)
SELECT arm, count(*) FILTER (WHERE exposed),
       count(*) FILTER (WHERE exposed AND clicked),
       count(*) FILTER (WHERE exposed AND carted)
FROM sessions GROUP BY arm
"""


def experiment_results(*, experiment: Experiment) -> ExperimentResults:
    with connection.cursor() as cursor:
        cursor.execute(_SQL, [experiment.pk, experiment.started_at])
        counts = {arm: (exposed, clicked, carted) for arm, exposed, clicked, carted in cursor}
    a_exposed, a_clicked, _ = counts.get("a", (0, 0, 0))
    baseline = a_clicked / a_exposed if a_exposed else PRIOR_RATE
    needed = sessions_needed_per_arm(
        baseline=baseline, relative_lift=experiment.minimum_detectable_lift
    )
    arms = []
    for arm, model_key, diversify in (
        ("a", experiment.a_model_key, experiment.a_diversify),
        ("b", experiment.b_model_key, experiment.b_diversify),
    ):
        exposed, clicked, carted = counts.get(arm, (0, 0, 0))
        arms.append(
            ArmResult(
                arm=arm,
                model_key=model_key,
                diversify=diversify,
                sessions=exposed,
                ctr=wilson_interval(clicked, exposed),
                atc=wilson_interval(carted, exposed),
                sessions_still_needed=max(0, needed - exposed),
            )
        )
    return ExperimentResults(
        experiment=experiment,
        arms=arms,
        ctr_difference=rate_difference(arms[0].ctr, arms[1].ctr),
        atc_difference=rate_difference(arms[0].atc, arms[1].atc),
        sessions_needed_per_arm=needed,
    )
