"""`manage.py embed_catalog`: backfill or re-embed the catalog here, with a progress bar."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from embeddings import runtime, selectors
from embeddings.models import EmbeddingModel
from embeddings.services.queue import BATCH_SIZE
from embeddings.services.registry import embedding_model_prepare
from embeddings.services.vectors import products_embed


class Command(BaseCommand):
    help = (
        "Compute missing or stale vectors (or all, with --all) for a model version in this "
        "process. Workers do this on their own; use it for a first big backfill or a rebuild."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--model", help="version key (default: the active version)")
        parser.add_argument("--all", action="store_true", help="re-embed even up-to-date products")
        parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
        parser.add_argument("--limit", type=int, help="at most this many products")

    def handle(self, *args: Any, **options: Any) -> None:
        model = self._model(options["model"])
        products = (
            selectors.products_embeddable().order_by("id")
            if options["all"]
            else selectors.products_needing_embedding(model=model, exclude_pending=False)
        )
        ids = list(products.values_list("id", flat=True)[: options["limit"]])
        if not ids:
            self.stdout.write(f"{model.key}: every product is up to date")
            return
        encoder = runtime.encoder_for(model)  # loaded once, before the bar starts
        embedded = failed = 0
        size = max(1, options["batch_size"])
        with tqdm(total=len(ids), unit="product", desc=model.key) as bar:
            for start in range(0, len(ids), size):
                result = products_embed(
                    product_ids=ids[start : start + size],
                    model=model,
                    force=options["all"],
                    encoder=encoder,
                )
                embedded += len(result.embedded)
                failed += len(result.image_failed)
                bar.update(len(ids[start : start + size]))
        self.stdout.write(f"{model.key}: {embedded} products embedded, {failed} image failures")

    def _model(self, key: str | None) -> EmbeddingModel:
        if key:
            try:
                model = selectors.embedding_model_get(key=key)
            except EmbeddingModel.DoesNotExist:
                raise CommandError(f"no model version {key!r}") from None
        else:
            active = selectors.embedding_model_active()
            if active is None:
                raise CommandError("no active model version; pass --model <key>")
            model = active
        if not model.is_prepared:
            if model.state != EmbeddingModel.State.BUILDING:
                raise CommandError(f"{model.key} is {model.state}: {model.error or 'not ready'}")
            model = embedding_model_prepare(model=model)  # load + index here
            if not model.is_prepared:
                raise CommandError(f"{model.key} cannot be loaded: {model.error}")
        return model
