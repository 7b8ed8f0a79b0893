"""Evaluation of Vitrine's embedding models: saved splits, metrics with bootstrap CIs, reports.

Framework-free (numpy; matplotlib only for plots; torch only through the model package).

Example::

    from embeddings.ml.evaluation import EvalConfig, Split, evaluate, make_split

    split = make_split(catalog, seed=0)          # cold items + held-out lookbooks
    split.save("split.json")
    result = evaluate(encoder, catalog, split)   # EvaluationResult
    result.metrics["lookbook_completion/recall@10"]["cold"]  # MetricValue(value, ci_low, ...)

The command line (``python -m embeddings.ml.evaluation --help``) makes splits, evaluates a
model and runs the full three-model experiment that writes a report under ``reports/``.
"""

from embeddings.ml.evaluation.bootstrap import (
    MetricValue,
    RelativeChange,
    bootstrap_ci,
    paired_relative_ci,
)
from embeddings.ml.evaluation.catalog import Catalog, CatalogItem, Scene, as_catalog
from embeddings.ml.evaluation.evaluate import (
    METRICS,
    EvalConfig,
    EvaluationResult,
    encode_catalog,
    evaluate,
)
from embeddings.ml.evaluation.splits import CELLS, Split, make_split

__all__ = [
    "CELLS",
    "METRICS",
    "Catalog",
    "CatalogItem",
    "EvalConfig",
    "EvaluationResult",
    "MetricValue",
    "RelativeChange",
    "Scene",
    "Split",
    "as_catalog",
    "bootstrap_ci",
    "encode_catalog",
    "evaluate",
    "make_split",
    "paired_relative_ci",
]
