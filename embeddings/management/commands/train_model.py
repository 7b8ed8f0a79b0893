"""`manage.py train_model`: fine-tune on the catalog's products and graph, register the result."""

from __future__ import annotations

import signal
import threading
import time
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from embeddings.ml.recipes import CATALOG_BASE
from embeddings.services.fine_tuning import embedding_model_train


class Command(BaseCommand):
    help = (
        "Train a model on the catalog (product text = title, brand, category, attributes, "
        "description; lookbooks, variant groups and mapped attributes = the graph), leaving "
        "the catalog's held-out split out, and register it as a building version, which "
        "workers then backfill. Ctrl-C saves the train state: the same command with the "
        "same --out continues from there. Activate it with `embedding_models activate`."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--out", type=Path, help="checkpoint folder (default: under data)")
        parser.add_argument("--key", help="version key (default: checkpoint-...-v<n>)")
        parser.add_argument(
            "--base", default=CATALOG_BASE, help="a spec to fine-tune or new:<timm arch>"
        )
        parser.add_argument("--epochs", type=float, help="passes over the catalog")
        parser.add_argument("--max-steps", type=int, help="stop after this many steps")

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        out = options["out"] or Path(settings.DATA_DIR) / "models" / f"catalog-{stamp}"
        overrides: dict[str, Any] = {}
        if options["epochs"] is not None:
            overrides["epochs"] = options["epochs"]
        if options["max_steps"] is not None:
            overrides["max_steps"] = options["max_steps"]

        def say(line: str) -> None:
            self.stdout.write(f"[{time.monotonic() - started:6.1f}s] {line}")
            self.stdout.flush()

        last_print = [0.0]

        def progress(step: int, total: int, losses: dict[str, float]) -> None:
            now = time.monotonic()
            if step in (1, total) or now - last_print[0] >= 2.0:
                last_print[0] = now
                rate = step / max(1e-6, now - started)
                loss = ", ".join(f"{k} {v:.3f}" for k, v in sorted(losses.items()))
                say(f"step {step}/{total} ({rate:.2f} steps/s overall): {loss}")

        # Ctrl-C asks the loop to save its state after the current step (a second one
        # interrupts at once, as usual).
        stop = threading.Event()

        def interrupt(signum: int, frame: Any) -> None:
            if stop.is_set():
                raise KeyboardInterrupt
            say("Ctrl-C: saving the train state after this step (Ctrl-C again to abort)")
            stop.set()

        previous = signal.signal(signal.SIGINT, interrupt)
        say(f"fine-tuning {options['base']} on the catalog into {out}")
        from embeddings.ml.train import TrainingStopped

        try:
            model = embedding_model_train(
                out_dir=out,
                key=options["key"],
                base=options["base"],
                config_overrides=overrides,
                progress=progress,
                report=say,
                should_stop=stop.is_set,
            )
        except TrainingStopped as stopped:
            raise CommandError(
                f"stopped at step {stopped.step}; run the same command with --out {out} "
                "to continue from there"
            ) from None
        except ValueError as error:
            raise CommandError(str(error)) from None
        finally:
            signal.signal(signal.SIGINT, previous)
        say(f"trained into {out}; registered {model.key} (building: backfilling)")
