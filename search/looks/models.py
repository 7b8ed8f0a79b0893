"""Vectors of lookbook cover photos: how a scene photo finds the lookbooks it looks like."""

from __future__ import annotations

from django.db import models
from pgvector.django import HalfVectorField

from catalog.models import Lookbook
from embeddings.models import EmbeddingModel


class LookbookCoverVector(models.Model):
    """The image vector of one lookbook's cover photo by one model version.

    `cover_name` is the stored cover file it was computed from: a new cover (a re-import
    naming another photo) has another name, so the vector is recomputed.

    `windows` holds the vectors of the cover's windows (`embeddings.ml.regions`, the same
    windows a scene photo is cut into) as float16 bytes, row after row: a scene's windows
    are matched against them in the web process (`search.looks.selectors`), never in SQL,
    so one blob per cover beats a row per window. Empty: computed before windows were kept.
    `windows_recipe` names how they were made (`embeddings.ml.regions.windows_recipe`): a
    scene's windows are matched only against covers of its own recipe, and a cover of
    another recipe than the current one is encoded again (`search.looks.services`).
    """

    lookbook = models.ForeignKey(Lookbook, on_delete=models.CASCADE, related_name="cover_vectors")
    model = models.ForeignKey(EmbeddingModel, on_delete=models.CASCADE, related_name="+")
    vector = HalfVectorField()
    cover_name = models.CharField(max_length=300)
    windows = models.BinaryField(default=b"", editable=False)
    windows_recipe = models.CharField(max_length=120)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["lookbook", "model"], name="lookbook_cover_vector_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.lookbook} · {self.model}"
