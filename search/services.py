"""Write side of the search app: API keys and stored query photos."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from search.models import ApiKey, QueryPhoto
from search.uploads import inspect_query_image

API_KEY_PREFIX_BYTES = 6  # 12 hex characters: unique enough to find the row
API_KEY_SECRET_BYTES = 32
#: DRF's throttle rate syntax: only the period's first letter counts.
RATE_PATTERN = re.compile(r"^[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)$")
#: Where query photos live in the default storage (the pages use the same layout).
QUERY_PHOTO_DIR = "queries"


# --- API keys -----------------------------------------------------------------------------
@dataclass(frozen=True)
class IssuedApiKey:
    api_key: ApiKey
    #: The full key, `<prefix>.<secret>`: shown once, never stored.
    plaintext: str


def api_key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_create(
    *,
    name: str,
    scope: str = ApiKey.Scope.READ,
    expires_at: datetime | None = None,
    rate: str = "",
) -> IssuedApiKey:
    """Create a key and return it with its plaintext (the only time it is known)."""
    if scope not in ApiKey.Scope.values:
        raise ValueError(f"scope must be one of {', '.join(ApiKey.Scope.values)}")
    if rate and not RATE_PATTERN.match(rate):
        raise ValueError(f"rate {rate!r} is not like '600/min' (per s, min, hour or day)")
    prefix = secrets.token_hex(API_KEY_PREFIX_BYTES)
    secret = secrets.token_urlsafe(API_KEY_SECRET_BYTES)
    api_key = ApiKey.objects.create(
        name=name,
        prefix=prefix,
        secret_hash=api_key_hash(secret),
        scope=scope,
        expires_at=expires_at,
        rate=rate,
    )
    return IssuedApiKey(api_key=api_key, plaintext=f"{prefix}.{secret}")


def api_key_verify(*, plaintext: str) -> ApiKey | None:
    """The usable key whose prefix and secret match, or None. Constant-time comparison."""
    prefix, _, secret = plaintext.strip().partition(".")
    if not prefix or not secret:
        return None
    api_key = ApiKey.objects.filter(prefix=prefix).first()
    if api_key is None:
        api_key_hash(secret)  # same work either way, so timing does not reveal prefixes
        return None
    if not hmac.compare_digest(api_key.secret_hash, api_key_hash(secret)):
        return None
    if not api_key.is_usable():
        return None
    now = timezone.now()
    # At most one write a minute per key: "last used" is for operators, not an audit log.
    if api_key.last_used_at is None or now - api_key.last_used_at > timedelta(minutes=1):
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


def api_key_revoke(*, prefix: str) -> ApiKey:
    """Revoke the key with this prefix (idempotent); raises ApiKey.DoesNotExist."""
    api_key = ApiKey.objects.get(prefix=prefix)
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


# --- Query photos -------------------------------------------------------------------------
def query_photo_store(*, data: bytes) -> QueryPhoto:
    """Validate and keep a shopper's photo under its SHA-256 (raises ImageRejected).

    Storing the same photo again refreshes its retention clock instead of copying it.
    """
    info = inspect_query_image(data)
    photo_id = hashlib.sha256(data).hexdigest()
    now = timezone.now()
    if QueryPhoto.objects.filter(pk=photo_id).update(created_at=now):
        return QueryPhoto.objects.get(pk=photo_id)
    photo = QueryPhoto(
        id=photo_id,
        content_type=info.content_type,
        width=info.width,
        height=info.height,
        created_at=now,
    )
    photo.image.save(f"{photo_id[:2]}/{photo_id}", ContentFile(data), save=False)
    # Two shoppers may upload the same photo at the same moment: both get past the update
    # above, and a plain INSERT made the second one a 500. The first row wins; the loser's
    # copy of the file (storage gave it another name) is removed.
    QueryPhoto.objects.bulk_create([photo], ignore_conflicts=True)
    stored = QueryPhoto.objects.get(pk=photo_id)
    written = photo.image.name
    if written and stored.image.name != written:
        photo.image.storage.delete(written)
    return stored


def query_photos_purge(*, now: datetime | None = None) -> int:
    """Delete query photos (rows and files) older than the retention period; return how
    many. A retention of 0 hours deletes every stored photo.

    Files under `queries/` with no row (written by an older page version, or left by a
    crash between file and row) are swept by their modification time too, so the promise
    "photos are gone after N hours" holds for every file in that folder.
    """
    hours = settings.VITRINE_QUERY_PHOTO_RETENTION_HOURS
    cutoff = (now or timezone.now()) - timedelta(hours=hours)
    deleted = 0
    for photo in QueryPhoto.objects.filter(created_at__lte=cutoff).iterator():
        photo.image.delete(save=False)  # a missing file is fine: storage ignores it
        photo.delete()
        deleted += 1
    deleted += _query_photo_orphans_purge(cutoff=cutoff)
    return deleted


def _query_photo_orphans_purge(*, cutoff: datetime) -> int:
    if not default_storage.exists(QUERY_PHOTO_DIR):
        return 0
    deleted = 0
    folders, _ = default_storage.listdir(QUERY_PHOTO_DIR)
    for folder in folders:
        _, names = default_storage.listdir(f"{QUERY_PHOTO_DIR}/{folder}")
        for name in names:
            path = f"{QUERY_PHOTO_DIR}/{folder}/{name}"
            if QueryPhoto.objects.filter(pk=name).exists():
                continue
            if default_storage.get_modified_time(path) <= cutoff:
                default_storage.delete(path)
                deleted += 1
    return deleted
