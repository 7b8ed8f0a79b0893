"""Writes of the looks app: keeping lookbook cover vectors current."""

from __future__ import annotations

import logging

import numpy as np
from django.db.models import Exists, OuterRef

from catalog.models import Lookbook
from embeddings import runtime
from embeddings.models import EmbeddingModel
from search.looks.models import LookbookCoverVector

log = logging.getLogger(__name__)

#: Covers encoded per call. Each is cut into its windows (about 50 crops, as a scene photo
#: is): 16 covers are some 900 crops, seconds of a worker per beat tick, never minutes.
COVER_BATCH = 16


def lookbook_cover_vectors_refresh(*, model: EmbeddingModel, limit: int = COVER_BATCH) -> int:
    """Encode up to `limit` lookbook covers that have no current vector by `model`.

    Current = computed from the cover file the lookbook names now. A cover that cannot be
    read is logged and skipped (it is tried again on the next call; the lookbook is then
    simply not among a scene's look-alikes). Returns how many vectors were written.
    """
    current = LookbookCoverVector.objects.filter(
        lookbook=OuterRef("pk"), model=model, cover_name=OuterRef("cover")
    ).exclude(windows=b"")  # a vector from before windows were kept is stale too
    stale = (
        Lookbook.objects.exclude(cover="")
        .filter(~Exists(current))
        .order_by("pk")
        .only("pk", "cover")
    )
    written = 0
    # Past unreadable covers until `limit` are written: a few broken covers at the head of
    # the order must not keep every later lookbook waiting.
    for lookbook in stale.iterator():
        if written >= limit:
            break
        try:
            with lookbook.cover.open("rb") as cover:
                scene = runtime.encode_query_regions(cover.read(), model=model)
        except (OSError, ValueError) as exc:
            log.warning("lookbook %s: cover %s unreadable: %s", lookbook.pk, lookbook.cover, exc)
            continue
        LookbookCoverVector.objects.update_or_create(
            lookbook=lookbook,
            model=model,
            defaults={
                "vector": scene.whole.tolist(),
                "windows": np.asarray(scene.regions, dtype=np.float16).tobytes(),
                "cover_name": str(lookbook.cover.name),
            },
        )
        written += 1
    return written
