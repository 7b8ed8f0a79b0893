"""Complete the look's one order: shared lookbooks blended with the model, and places kept
for products no lookbook holds yet.

Pure numpy (no Django, no torch), so the search app (`search.complete_the_look`, feeding it
from Postgres) and the evaluation (`embeddings.ml.evaluation`, feeding it vectors in memory)
rank with the same function: the report's `complete_the_look/recall@10` is the order
shoppers see.

- Score: how many lookbooks a candidate shares with the query's products, as a share of the
  most any candidate shares (0..1), plus ``model_weight`` times the model's cosine mapped
  to 0..1. Counting alone cannot order the many candidates with an equal count, and a
  strict "count first" order lets a high count with a poor match pass every good match.
- Kept places: place ``new_first`` and every ``new_every``-th place after it (2, 7, 12,
  ...) go to the best-scored candidate that no lookbook holds (a new product). Such a
  product shares no lookbook with anything, so without kept places it ranks below every
  candidate that shares one, however well the model matches it, and never gets the
  exposure that could put it in a lookbook.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class LookRanking:
    """How complete the look orders its candidates (the defaults are the app's)."""

    # Weight of the model's cosine (mapped to 0..1) beside the shared-lookbook share (0..1).
    # Chosen on validation rooms cut from IKEA's training rooms, never the held-out ones
    # (bench/complete_the_look_fit.py): with the kept places below, every weight from 0.001
    # to 1 ties for the best recall there with the full model and with image-text only
    # (above 1 image-text loses); 0.5 is inside that range.
    # bench/results/complete_the_look_fit*.json
    model_weight: float = 0.5
    # Places kept for the best candidate no lookbook holds: ``new_first``, then every
    # ``new_every``-th (2, 7, 12, ...); new_every 0 keeps none. A product rule, not a tuned
    # figure: 1 place in 5 for products with no history, the first of them second so that
    # a short shelf (the app shows 2-4 a category) has one too.
    new_every: int = 5
    new_first: int = 2

    def kept_for_new(self, place: int) -> bool:
        """Whether 1-based ``place`` is kept for a product no lookbook holds."""
        return (
            self.new_every > 0
            and place >= self.new_first
            and (place - self.new_first) % self.new_every == 0
        )


DEFAULT_LOOK_RANKING = LookRanking()


def look_scores(
    shared: npt.ArrayLike, cosine: npt.ArrayLike, model_weight: float
) -> npt.NDArray[np.float64]:
    """(n,) blended score of each candidate: shared / max(shared) + weight · (cosine + 1) / 2.

    ``shared``: how many (query product, lookbook) pairs the candidate shares; ``cosine``:
    the model's cosine between the query and the candidate (-1..1).
    """
    counts = np.asarray(shared, dtype=np.float64)
    top = counts.max() if counts.size else 0.0
    share = counts / top if top > 0 else np.zeros_like(counts)
    return share + model_weight * (np.asarray(cosine, dtype=np.float64) + 1.0) / 2.0


def look_order(
    shared: npt.ArrayLike,
    cosine: npt.ArrayLike,
    is_new: npt.ArrayLike,
    *,
    ranking: LookRanking = DEFAULT_LOOK_RANKING,
    limit: int | None = None,
) -> npt.NDArray[np.intp]:
    """Candidate positions (indices into the arguments) in complete the look's order.

    ``is_new``: the candidate is in no lookbook. Candidates with equal scores keep their
    input order. Returns the first ``limit`` positions (all when None).
    """
    score = look_scores(shared, cosine, ranking.model_weight)
    new = np.asarray(is_new, dtype=bool)
    n = len(score)
    if new.shape != score.shape:
        raise ValueError("shared, cosine and is_new must have one value per candidate")
    count = n if limit is None else max(0, min(int(limit), n))
    by_score = np.argsort(-score, kind="stable")
    if ranking.new_every <= 0 or not new.any():
        return by_score[:count]
    new_by_score = by_score[new[by_score]]
    placed = np.zeros(n, dtype=bool)
    out = np.empty(count, dtype=np.intp)
    next_any = next_new = 0
    for place in range(count):
        pick = -1
        if ranking.kept_for_new(place + 1):
            while next_new < len(new_by_score) and placed[new_by_score[next_new]]:
                next_new += 1
            if next_new < len(new_by_score):
                pick = int(new_by_score[next_new])
        if pick < 0:
            while placed[by_score[next_any]]:
                next_any += 1
            pick = int(by_score[next_any])
        placed[pick] = True
        out[place] = pick
    return out
