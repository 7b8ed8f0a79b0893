"""Choose complete the look's model weight on validation rooms cut from the training rooms.

The held-out rooms of a split score the models; tuning on them would overstate the result.
``fit_look_ranking`` holds out a seeded share of the *training* lookbooks instead: their
leave-one-out queries are ranked with ``look_order`` over a graph of the remaining training
lookbooks, for each weight of a grid, and the weight with the best recall@10 is chosen.
Cold items are left out altogether (they belong to the test).

Caveat, reported with the figures: a model trained with the neighbour objective saw the
validation rooms as neighbours, so its cosine is more telling there than on unseen rooms,
which can favour a larger weight than held-out rooms would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from embeddings.ml.evaluation import metrics as m
from embeddings.ml.evaluation.catalog import Catalog
from embeddings.ml.evaluation.evaluate import (
    EvalConfig,
    LookbookGraph,
    complete_the_look_hits,
    cooccurrence_recall,
    plan_queries,
)
from embeddings.ml.evaluation.splits import Split, _choose
from embeddings.ml.look_ranking import LookRanking

#: Model weights tried: from "the count decides, the model breaks ties" to "the model leads".
WEIGHT_GRID: tuple[float, ...] = (0.001, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


@dataclass(frozen=True)
class FitRow:
    model_weight: float
    new_every: int
    recall: float  # all validation queries
    recall_new: float  # queries whose left-out item no remaining training lookbook holds
    recall_known: float


def validation_split(
    catalog: Catalog, split: Split, *, prefix: str, fraction: float, seed: int
) -> tuple[Catalog, Split]:
    """A catalog of the training lookbooks only (cold items removed) and a split holding out
    ``fraction`` of those named ``prefix...`` (seeded), for ``plan_queries``."""
    training = split.training_lookbooks(catalog.lookbooks)
    rooms = sorted(lid for lid in training if lid.startswith(prefix))
    held = tuple(sorted(_choose(rooms, fraction, np.random.default_rng(seed))))
    val_catalog = Catalog(catalog.name, catalog.items, {k: list(v) for k, v in training.items()})
    return val_catalog, replace(split, heldout_lookbooks=held)


def fit_look_ranking(
    fused: np.ndarray,
    catalog: Catalog,
    split: Split,
    *,
    prefix: str,
    new_every: Sequence[int] = (0, 5),
    weights: Sequence[float] = WEIGHT_GRID,
    fraction: float = 0.25,
    config: EvalConfig | None = None,
) -> dict[str, Any]:
    """Recall@10 of complete the look on validation rooms for each (weight, new_every).

    ``fused``: (n items, D) unit item vectors in catalog order. Returns a JSON-ready dict:
    the grid's rows, the co-occurrence baseline on the same queries, and for each
    ``new_every`` the weights with the best recall (all of them: on IKEA whole ranges tie,
    and the app's default is then one inside the range every fitted model shares).
    """
    config = config or EvalConfig()
    val_catalog, val_split = validation_split(
        catalog, split, prefix=prefix, fraction=fraction, seed=config.seed
    )
    ok = np.ones(len(catalog.items), dtype=bool)
    plan = plan_queries(val_catalog, val_split, config, ok)
    loo = [x for cell in plan.leave_one_out.values() for x in cell]
    graph = LookbookGraph.of(val_catalog, val_split)
    new = graph.is_new()[[x.target for x in loo]]
    queries = np.stack([m.mean_of_normalised(fused[list(x.context)]) for x in loo])
    rows = []
    for n in new_every:
        for w in weights:
            ranking = LookRanking(model_weight=w, new_every=n)
            hits = complete_the_look_hits(fused, queries, loo, graph, [], ranking, config.k)
            rows.append(
                FitRow(
                    w,
                    n,
                    round(float(hits.mean()), 4),
                    round(float(hits[new].mean()), 4) if new.any() else float("nan"),
                    round(float(hits[~new].mean()), 4),
                )
            )
    co = np.asarray([cooccurrence_recall(graph, x, config.k) for x in loo])
    best = {n: max(r.recall for r in rows if r.new_every == n) for n in new_every}
    best_weights = {
        n: [r.model_weight for r in rows if r.new_every == n and r.recall == best[n]]
        for n in new_every
    }
    return {
        "validation_lookbooks": len(val_split.heldout_lookbooks),
        "graph_lookbooks": len(graph.members),
        "queries": len(loo),
        "queries_new": int(new.sum()),
        "cooccurrence": {
            "recall": round(float(co.mean()), 4),
            "recall_new": round(float(co[new].mean()), 4) if new.any() else None,
            "recall_known": round(float(co[~new].mean()), 4),
        },
        "grid": [r.__dict__ for r in rows],
        "best_model_weights": {str(n): w for n, w in best_weights.items()},
    }


def heldout_orders(
    fused: np.ndarray,
    catalog: Catalog,
    split: Split,
    rankings: dict[str, LookRanking],
    config: EvalConfig | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """complete_the_look/recall@10 on the split's held-out rooms, per cell, for each of
    ``rankings`` (label -> order): what each part of the order does, measured after the
    weight was chosen and never used to choose it. Same queries as the report's."""
    from embeddings.ml.evaluation.bootstrap import bootstrap_ci

    config = config or EvalConfig()
    ok = np.ones(len(catalog.items), dtype=bool)
    plan = plan_queries(catalog, split, config, ok)
    graph = LookbookGraph.of(catalog, split)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for label, ranking in rankings.items():
        for cell, loo in plan.leave_one_out.items():
            if not loo:
                continue
            queries = np.stack([m.mean_of_normalised(fused[list(x.context)]) for x in loo])
            hits = complete_the_look_hits(fused, queries, loo, graph, [], ranking, config.k)
            v = bootstrap_ci(hits, resamples=config.resamples, seed=config.seed)
            out.setdefault(label, {})[cell] = {
                "value": round(v.value, 4),
                "ci_low": round(v.ci_low, 4),
                "ci_high": round(v.ci_high, 4),
                "n": v.n,
            }
    return out
