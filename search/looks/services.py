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

#: Covers encoded per call. Each is cut into its windows as a scene photo is (one scene-graph
#: pass, or about 50 crops): 16 covers are seconds of a worker per beat tick, never minutes.
COVER_BATCH = 16


def lookbook_cover_vectors_refresh(*, model: EmbeddingModel, limit: int = COVER_BATCH) -> int:
    """Encode up to `limit` lookbook covers that have no current vector by `model`.

    Current = computed from the cover file the lookbook names now, its windows made by the
    recipe this process's scene photos get (`runtime.query_regions_recipe`: a change of
    `WindowConfig` or of the export's scene graph re-encodes every cover, batch by batch,
    as a new cover would be; `search.looks.selectors` skips the others meanwhile, so a
    scene's windows never meet windows made another way). A cover that cannot be
    read is logged and skipped (it is tried again on the next call; the lookbook is then
    simply not among a scene's look-alikes). Returns how many vectors were written.
    """
    recipe = runtime.query_regions_recipe(model=model)
    current = LookbookCoverVector.objects.filter(
        lookbook=OuterRef("pk"), model=model, cover_name=OuterRef("cover"), windows_recipe=recipe
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
                "windows_recipe": scene.recipe,
            },
        )
        written += 1
    return written
