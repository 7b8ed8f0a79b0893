"""Writes of the looks app: keeping lookbook cover vectors current."""

from __future__ import annotations

import logging

from django.db.models import Exists, OuterRef

from catalog.models import Lookbook
from embeddings import runtime
from embeddings.models import EmbeddingModel
from search.looks.models import LookbookCoverVector

log = logging.getLogger(__name__)

#: Covers encoded per call: one encoder batch, so a beat tick never holds a worker long.
COVER_BATCH = 64


def lookbook_cover_vectors_refresh(*, model: EmbeddingModel, limit: int = COVER_BATCH) -> int:
    """Encode up to `limit` lookbook covers that have no current vector by `model`.

    Current = computed from the cover file the lookbook names now. A cover that cannot be
    read is logged and skipped (it is tried again on the next call; the lookbook is then
    simply not among a scene's look-alikes). Returns how many vectors were written.
    """
    current = LookbookCoverVector.objects.filter(
        lookbook=OuterRef("pk"), model=model, cover_name=OuterRef("cover")
    )
    stale = (
        Lookbook.objects.exclude(cover="")
        .filter(~Exists(current))
        .order_by("pk")
        .only("pk", "cover")[:limit]
    )
    lookbooks, images = [], []
    for lookbook in stale:
        try:
            with lookbook.cover.open("rb") as cover:
                images.append(cover.read())
        except OSError as exc:
            log.warning("lookbook %s: cover %s unreadable: %s", lookbook.pk, lookbook.cover, exc)
            continue
        lookbooks.append(lookbook)
    if not lookbooks:
        return 0
    result = runtime.encoder_for(model).encode_images(images)
    for index, reason in result.failed.items():
        log.warning("lookbook %s: cover not encoded: %s", lookbooks[index].pk, reason)
    for row, index in enumerate(result.indices):
        LookbookCoverVector.objects.update_or_create(
            lookbook=lookbooks[index],
            model=model,
            defaults={
                "vector": result.vectors[row].tolist(),
                "cover_name": str(lookbooks[index].cover.name),
            },
        )
    return len(result.indices)
