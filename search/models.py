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
