from __future__ import annotations

import logging
from typing import Any

from django.apps import AppConfig

log = logging.getLogger(__name__)


def _embed_changed_products(sender: Any, product_ids: list[int], **kwargs: Any) -> None:
    """Queue embeddings as soon as an import commits products whose content changed.

    Runs inside the importer's on-commit hook: a failure here must not fail the import, and
    the sweeper finds whatever this misses.
    """
    from embeddings.services.queue import products_embed_enqueue

    try:
        products_embed_enqueue(product_ids=product_ids)
    except Exception:  # the broker or database hiccuped; the periodic sweeper catches up
        log.exception("could not queue embeddings for %d products", len(product_ids))


class EmbeddingsConfig(AppConfig):
    name = "embeddings"
    verbose_name = "Embeddings"

    def ready(self) -> None:
        # Ingestion announces changed products with this signal (see catalog.services).
        from catalog.services.products import products_need_embedding

        products_need_embedding.connect(
            _embed_changed_products, dispatch_uid="embeddings.embed_changed_products"
        )
