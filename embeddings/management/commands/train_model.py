"""`manage.py train_model`: train on the catalog's products and lookbooks, register the result."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from embeddings import services


class Command(BaseCommand):
    help = (
        "Train a model on the catalog (product text = title, brand, category, attributes, "
        "description; lookbooks = the graph) and register it as a building version, which "
        "workers then backfill. Activate it with `embedding_models activate` once evaluated."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--out", type=Path, help="checkpoint folder (default: under data)")
        parser.add_argument("--key", help="version key (default: checkpoint-...-v<n>)")
        parser.add_argument(
            "--base", default="new:resnet10t", help="new:<timm arch> or a spec to fine-tune"
        )
        parser.add_argument("--epochs", type=float, help="passes over the catalog")
        parser.add_argument("--max-steps", type=int, help="stop after this many steps")

    def handle(self, *args: Any, **options: Any) -> None:
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        out = options["out"] or Path(settings.DATA_DIR) / "models" / f"catalog-{stamp}"
        overrides: dict[str, Any] = {}
        if options["epochs"] is not None:
            overrides["epochs"] = options["epochs"]
        if options["max_steps"] is not None:
            overrides["max_steps"] = options["max_steps"]

        def progress(step: int, total: int, losses: dict[str, float]) -> None:
            if step == total or step % 10 == 0:
                loss = ", ".join(f"{k}={v:.3f}" for k, v in sorted(losses.items()))
                self.stdout.write(f"step {step}/{total} {loss}")

        try:
            model = services.embedding_model_train(
                out_dir=out,
                key=options["key"],
                base=options["base"],
                config_overrides=overrides,
                progress=progress,
            )
        except ValueError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"trained into {out}; registered {model.key} (building: backfilling)")
