"""Evaluation of Vitrine's embedding models: saved splits, metrics with bootstrap CIs, reports.

Framework-free (numpy; matplotlib only for plots; torch only through the model package).

Example::

    from embeddings.ml.evaluation import EvalConfig, Split, evaluate, make_split

    split = make_split(catalogue, seed=0)          # cold items + held-out lookbooks
    split.save("split.json")
    result = evaluate(encoder, catalogue, split)   # EvaluationResult
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
from embeddings.ml.evaluation.catalogue import Catalogue, CatalogueItem, Scene, as_catalogue
from embeddings.ml.evaluation.evaluate import (
    METRICS,
    EvalConfig,
    EvaluationResult,
    encode_catalogue,
    evaluate,
)
from embeddings.ml.evaluation.splits import CELLS, Split, make_split

__all__ = [
    "CELLS",
    "METRICS",
    "Catalogue",
    "CatalogueItem",
    "EvalConfig",
    "EvaluationResult",
    "MetricValue",
    "RelativeChange",
    "Scene",
    "Split",
    "as_catalogue",
    "bootstrap_ci",
    "encode_catalogue",
    "evaluate",
    "make_split",
    "paired_relative_ci",
]
