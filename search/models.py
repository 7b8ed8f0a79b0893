"""API keys for server-to-server clients, and shoppers' query photos kept for a short while."""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.utils import timezone


class ApiKey(models.Model):
    """A revocable, optionally expiring credential for one client of the REST API.

    The key shown once at creation is ``<prefix>.<secret>``. Only the prefix (to find the
    row) and the SHA-256 of the secret are stored: the secret is 32 random bytes, so a fast
    hash is as strong as a slow one here and keeps authentication off the latency budget.
    """

    class Scope(models.TextChoices):
        READ = "read", "Read only"
        READ_WRITE = "read_write", "Read and write"

    name = models.CharField(max_length=200, help_text="Who uses the key, e.g. 'storefront'")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.READ)
    # Empty means the API-wide default rate (REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]).
    rate = models.CharField(
        max_length=32, blank=True, help_text="Requests per period, e.g. '600/min'"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…, {self.scope})"

    @property
    def can_write(self) -> bool:
        return self.scope == self.Scope.READ_WRITE

    def is_usable(self, *, now: datetime | None = None) -> bool:
        """True unless the key was revoked or has expired."""
        now = now or timezone.now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now


class QueryPhoto(models.Model):
    """A shopper's uploaded search photo, kept so that a results URL can name it and a new
    crop can be searched without uploading again.

    The id is the SHA-256 of the bytes: uploading the same photo twice stores it once, and
    the id cannot be guessed, so nobody can walk through other shoppers' photos. Rows and
    files are deleted VITRINE_QUERY_PHOTO_RETENTION_HOURS after the latest upload
    (`search.tasks.query_photos_purge`, run by Celery beat).
    """

    id = models.CharField(primary_key=True, max_length=64, editable=False)
    image = models.FileField(upload_to="queries/")
    content_type = models.CharField(max_length=32)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Query photo {self.pk[:12]}… ({self.width}x{self.height})"


class Synonym(models.Model):
    """A shopper's word and what the catalog calls it ("tee" -> "t-shirt").

    Edited by merchandisers in the admin; seeded with common fashion and home words by a
    data migration. Query understanding (`search.understanding`) reads the phrase as the
    catalog term: a term the catalog has becomes a ranking signal, one it lacks is ignored.
    """

    phrase = models.CharField(
        max_length=100, unique=True, help_text="What shoppers type, e.g. 'tee' or 'trainers'"
    )
    means = models.CharField(
        max_length=200,
        help_text="The catalog's words for it, e.g. 't-shirt' or 'sneakers'; "
        "separate alternatives with '|', e.g. 'jumper|sweater'",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["phrase"]

    def __str__(self) -> str:
        return f"{self.phrase} → {self.means}"


class VocabularyTerm(models.Model):
    """One value the catalog holds, as query understanding matches it.

    Rebuilt from the catalog (`search.services.vocabulary_rebuild`) when it changes; the
    trigram index lets a misspelt word ("trowsers") find its term (`pg_trgm`).
    """

    #: The normalised words (lowercase, no accents, singular, no punctuation) it matches.
    key = models.CharField(max_length=200)
    #: `attribute:<name>`, `category` (a level of the category path) or `brand`.
    field = models.CharField(max_length=120)
    #: The catalog's own spelling, shown on the chip and matched exactly.
    value = models.CharField(max_length=500)
    #: The full categories holding a category level (exact matches use the btree index).
    categories = models.JSONField(default=list, blank=True)
    product_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["key", "field"]
        constraints = [
            models.UniqueConstraint(fields=["key", "field", "value"], name="vocabulary_term_unique")
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.field}: {self.value})"


class SearchCalibration(models.Model):
    """What text and photo search learned from one model version on one catalog: the
    fusion weights and the "no good match" thresholds, with the figures behind them.

    Recomputed (`search.services.search_calibration_fit`) when the version's vectors or
    the catalog change; search reads the newest row of the active version.
    """

    model = models.ForeignKey(
        "embeddings.EmbeddingModel", on_delete=models.CASCADE, related_name="search_calibrations"
    )
    #: Product count and latest update of the catalog it was fitted on.
    catalog_stamp = models.CharField(max_length=100)
    #: Weights of the text ranking's signals (see `search.ranking.SIGNALS`).
    weights = models.JSONField(default=dict)
    #: Best text-vector cosine under which words with no recognised term and no full-text
    #: match are "no good match"; and the same for photos' best image cosine (null: none
    #: separates this model's in-catalog photos from unrelated ones).
    text_threshold = models.FloatField(null=True, blank=True)
    image_threshold = models.FloatField(null=True, blank=True)
    #: How it was chosen: query counts, precision per weight set, score distributions.
    report = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        get_latest_by = "created_at"

    def __str__(self) -> str:
        return f"Search calibration of {self.model_id} ({self.catalog_stamp})"
