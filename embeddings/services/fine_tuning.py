"""Fine-tuning a version on the catalog (runs on the training worker or the CLI)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from embeddings.ml.recipes import CATALOG_BASE, CATALOG_FINE_TUNE
from embeddings.models import EmbeddingModel
from embeddings.services.evaluation import catalog_dataset, catalog_split
from embeddings.services.registry import embedding_model_register

log = logging.getLogger(__name__)


def embedding_model_train(
    *,
    out_dir: Path,
    key: str | None = None,
    base: str = CATALOG_BASE,
    config_overrides: dict[str, Any] | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    report: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> EmbeddingModel:
    """Train a model on the catalog and register it as a new building version (backfill).

    `base` is `TrainConfig.init`: a model spec to fine-tune (by default the bundled
    `CATALOG_BASE`) or "new:<timm arch>" (scratch image tower + MiniLM text); the recipe is
    `CATALOG_FINE_TUNE` with `config_overrides` on top. The catalog's held-out split
    (`catalog_split`) is left out of training, so evaluation on it is honest. Runs where it
    is called (the training worker or the command), in minutes to hours; the checkpoint
    lands in `out_dir`. `report`, `progress` and `should_stop` are
    `embeddings.ml.train.train`'s hooks (`TrainingStopped` propagates: the same call later
    resumes from the saved step).
    """
    from dataclasses import replace

    from django.conf import settings

    from embeddings.ml.evaluation.experiment import training_dataset
    from embeddings.ml.train import train
    from embeddings.ml.train_config import TrainConfig

    say = report or (lambda line: log.info("%s", line))
    say("reading the catalog's products, lookbooks and variant groups")
    dataset = catalog_dataset()
    if len(dataset) < 2:
        raise ValueError("the catalog has fewer than 2 embeddable products to train on")
    if len(dataset) >= 4:
        split = catalog_split(dataset=dataset)
        dataset = training_dataset(dataset, split)
        say(
            f"held out {len(split.cold_items)} products and {len(split.heldout_lookbooks)} "
            "lookbooks for evaluation"
        )
    # Frozen-tower features are kept between runs (keyed by tower, input and files): a
    # resumed or repeated fine-tune of the same catalog does not run the tower again.
    overrides = {
        "feature_cache_dir": str(settings.DATA_DIR / "cache" / "features"),
        **CATALOG_FINE_TUNE,
        **(config_overrides or {}),
    }
    config = replace(TrainConfig(init=base), **overrides)
    checkpoint = train(
        config,
        dataset,
        Path(out_dir),
        progress=progress,
        report=report,
        should_stop=should_stop,
    )
    say("registering the new version")
    return embedding_model_register(spec=f"checkpoint:{Path(checkpoint).resolve()}", key=key)
