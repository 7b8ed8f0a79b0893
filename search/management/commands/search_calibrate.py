"""Rebuild the query vocabulary and fit the active version's search calibration now."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from embeddings.selectors import embedding_model_active
from search.calibration import search_calibration_fit
from search.vocabulary import vocabulary_rebuild


class Command(BaseCommand):
    help = (
        "Rebuild query understanding's vocabulary from the catalog and fit the active model "
        "version's ranking weights and 'no good match' thresholds (the beat does it by itself "
        "when the catalog moved by 10%)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--no-photos", action="store_true", help="skip the photo threshold")

    def handle(self, *args: Any, **options: Any) -> None:
        terms = vocabulary_rebuild()
        self.stdout.write(f"vocabulary: {terms} terms")
        model = embedding_model_active()
        if model is None:
            raise CommandError("No embedding model is active: nothing to calibrate.")
        calibration = search_calibration_fit(
            model=model, seed=options["seed"], photos=not options["no_photos"]
        )
        report = {k: v for k, v in calibration.report.items() if k != "weights_tried"}
        self.stdout.write(
            json.dumps(
                {
                    "model": model.key,
                    "weights": calibration.weights,
                    "text_threshold": calibration.text_threshold,
                    "image_threshold": calibration.image_threshold,
                    "image_class_threshold": calibration.image_class_threshold,
                    "image_energy_threshold": calibration.image_energy_threshold,
                    **report,
                },
                indent=2,
            )
        )
