"""Bootstrap confidence intervals over queries.

A metric is the mean of per-query values; its uncertainty comes from which queries happened to
be in the test set, so we resample queries with replacement (percentile bootstrap). For
comparing two models on the same queries, ``paired_relative_ci`` resamples the same query
indices for both, which is tighter and more honest than comparing two separate intervals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

DEFAULT_RESAMPLES = 1000


@dataclass(frozen=True)
class MetricValue:
    """A metric's point estimate with its bootstrap 95% CI.

    ``value`` is the mean over ``n`` queries; ``ci_low``/``ci_high`` the 2.5th/97.5th
    percentiles of the bootstrap means (both NaN when n == 0).
    """

    value: float
    ci_low: float
    ci_high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        """Plain-JSON form (NaN becomes None at the JSON writer)."""
        return asdict(self)


def _resample_means(values: npt.NDArray[np.float64], resamples: int, seed: int) -> npt.NDArray:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(resamples, len(values)))
    return values[idx].mean(axis=1)


def bootstrap_ci(
    values: npt.ArrayLike,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> MetricValue:
    """Mean of the per-query ``values`` (NaNs dropped) with a percentile bootstrap CI.

    Returns a ``MetricValue``; the interval always contains the point estimate (the
    percentile interval of a mean does in all but degenerate cases, and we clamp for those).
    """
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if len(arr) == 0:
        return MetricValue(float("nan"), float("nan"), float("nan"), 0)
    point = float(arr.mean())
    means = _resample_means(arr, resamples, seed)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return MetricValue(point, float(min(low, point)), float(max(high, point)), len(arr))


@dataclass(frozen=True)
class RelativeChange:
    """Relative change of model B over model A on the same queries: mean(B)/mean(A) - 1.

    ``ci_low``/``ci_high`` come from a paired bootstrap (the same resampled queries for both
    models); ``nan`` when model A scores 0.
    """

    value: float
    ci_low: float
    ci_high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        """Plain-JSON form."""
        return asdict(self)


def paired_relative_ci(
    baseline: npt.ArrayLike,
    candidate: npt.ArrayLike,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> RelativeChange:
    """Relative improvement of ``candidate`` over ``baseline`` with a paired bootstrap CI.

    Both arrays hold per-query values for the same queries in the same order; pairs where
    either is NaN are dropped. Returns a ``RelativeChange``.
    """
    a = np.asarray(baseline, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError("paired values must have the same shape")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    nan = float("nan")
    if len(a) == 0 or a.mean() == 0.0:
        return RelativeChange(nan, nan, nan, len(a))
    point = float(b.mean() / a.mean() - 1.0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(resamples, len(a)))
    base_means = a[idx].mean(axis=1)
    cand_means = b[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = cand_means / base_means - 1.0
    rel = rel[np.isfinite(rel)]
    if len(rel) == 0:
        return RelativeChange(point, nan, nan, len(a))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(rel, [tail, 1.0 - tail])
    return RelativeChange(point, float(min(low, point)), float(max(high, point)), len(a))
