"""Writes of shoppable posts: adding them (upload, image URL, feed), tagging them with the
scene search, the merchandiser's review, publishing, and a creator's removal request.

Rules held here, whatever calls them (admin, tasks, shell):
- a post is published only with recorded rights (`Post.Rights.GRANTED`) and at least one
  approved tag; the database's check constraint holds the rights half too;
- taking the rights back unpublishes the post;
- a removal request unpublishes the post, deletes its image files and its regions and
  tags, and keeps only the row (creator, post URL, when) so a feed cannot bring it back.
  Posts store no vectors: the tagger encodes the photo in memory and keeps only boxes.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import F, Max, Q, QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from catalog.ingest.fetching import FetchError, FetchPolicy, SafeFetcher, fetch_policy_from_settings
from catalog.ingest.imaging import ImageRejectedError, normalise_image
from catalog.models import Product
from search.posts.feeds import PostFeedError, PostRow, RowProblem, feed_rows, http_url
from search.posts.models import WHOLE_PHOTO, Post, PostFeed, PostFeedRowError, PostRegion, PostTag

if TYPE_CHECKING:
    from search.looks.selectors import SceneHit, SceneRegion, SceneResults

log = logging.getLogger(__name__)

#: Products the tagger suggests for a photo: the first of the scene ranking, the one the
#: shopper's photo search lists (`bench/shop_the_look.py`'s tag precision@5 is of the first
#: five). A merchandiser reviews them all; more would mostly be noise to reject.
TAG_SUGGESTIONS = 8
#: Products suggested for a region a merchandiser draws (a photo search of its crop).
SUGGESTIONS_PER_REGION = 3
#: The smallest side of a region a merchandiser draws, as a fraction of the photo's.
MIN_REGION_SIDE = 0.05
#: A feed file larger than this is refused when uploaded, or when fetched from its URL.
FEED_MAX_BYTES = 20 * 1024 * 1024
FEED_ACCEPT = "text/csv, application/json, application/x-ndjson, text/plain;q=0.9, */*;q=0.5"
RIGHTS_MISSING = "The creator's rights are not recorded as granted; record them before publishing."
#: A running feed whose heartbeat is older than this lost its worker (a row's fetch is
#: capped by VITRINE_FETCH_DEADLINE_SECONDS, 20 s by default).
FEED_STALE_SECONDS = 300


class PostRefusedError(ValueError):
    """A change the rules do not allow; `reason` is shown to the merchandiser."""

    def __init__(self, reason: str, *, field: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


# --- Adding posts -----------------------------------------------------------------------------
def _fetch_policy() -> FetchPolicy:
    """The catalog images' policy: public addresses only, their size and time caps."""
    return fetch_policy_from_settings(
        allowed_hosts=settings.VITRINE_FETCH_ALLOWED_HOSTS,
        max_bytes=settings.VITRINE_FETCH_MAX_IMAGE_BYTES,
        deadline=float(settings.VITRINE_FETCH_DEADLINE_SECONDS),
    )


@dataclass(frozen=True)
class StoredImage:
    image: str
    thumbnail: str
    width: int
    height: int


def _image_store(data: bytes) -> StoredImage:
    """Normalise (decode safely, strip metadata: creators' photos carry GPS EXIF) and store
    the photo and its thumbnail under names of their own. Raises ImageRejectedError."""
    normalised = normalise_image(data)
    token = uuid.uuid4().hex
    image = default_storage.save(f"posts/{token}.jpg", ContentFile(normalised.content))
    thumb = default_storage.save(f"posts/thumbs/{token}.jpg", ContentFile(normalised.thumbnail))
    return StoredImage(image, thumb, normalised.width, normalised.height)


def _files_delete(*names: str | None) -> None:
    for name in names:
        if name:
            default_storage.delete(name)


def _prepare_later(post_id: int) -> None:
    from search.posts import tasks

    transaction.on_commit(lambda: tasks.post_prepare_task.delay(post_id=post_id))


def _duplicate_of(*, post_url: str, image_url: str) -> Post | None:
    """A post already in the inbox (or removed) for the same post URL, else image URL."""
    if post_url:
        return Post.objects.filter(post_url=post_url).order_by("pk").first()
    if image_url:
        return Post.objects.filter(image_url=image_url).order_by("pk").first()
    return None


def _refuse_duplicate(*, post_url: str, image_url: str) -> None:
    existing = _duplicate_of(post_url=post_url, image_url=image_url)
    if existing is None:
        return
    if existing.state == Post.State.REMOVED:
        raise PostRefusedError(
            f"the creator asked for this post to be removed (post #{existing.pk})",
            field="post_url",
        )
    raise PostRefusedError(f"already in the inbox as post #{existing.pk}", field="post_url")


def post_create(
    *,
    image: bytes | None = None,
    image_url: str = "",
    caption: str = "",
    creator_handle: str = "",
    post_url: str = "",
    rights: str = Post.Rights.NONE,
    rights_note: str = "",
    created_by_id: int | None = None,
) -> Post:
    """Add a post to the inbox from a photo's bytes or its URL; a worker then fetches the
    URL (through the safe fetcher) and tags the photo. Raises PostRefusedError for a photo
    we cannot use or a post already in the inbox."""
    if (image is None) == (not image_url):
        raise PostRefusedError("Give a photo or an image URL (one of them).")
    _refuse_duplicate(post_url=post_url, image_url=image_url)
    stored: StoredImage | None = None
    if image is not None:
        try:
            stored = _image_store(image)
        except ImageRejectedError as exc:
            raise PostRefusedError(
                f"This photo cannot be used: {exc.reason}.", field="image"
            ) from exc
    else:
        try:  # the form of the URL (scheme, host, port) at once; its addresses when fetched
            with SafeFetcher(_fetch_policy()) as fetcher:
                fetcher.check_url(image_url)
        except FetchError as exc:
            raise PostRefusedError(
                f"This URL cannot be fetched: {exc.reason}.", field="image_url"
            ) from exc
    with transaction.atomic():
        post = Post.objects.create(
            source=Post.Source.URL if image_url else Post.Source.UPLOAD,
            image_url=image_url,
            image=stored.image if stored else "",
            thumbnail=stored.thumbnail if stored else "",
            width=stored.width if stored else None,
            height=stored.height if stored else None,
            caption=caption,
            creator_handle=creator_handle.lstrip("@"),
            post_url=post_url,
            rights=rights,
            rights_note=rights_note,
            created_by_id=created_by_id,
        )
        _prepare_later(post.pk)
    return post


# --- Fetching and tagging (the worker) ---------------------------------------------------------
def _fail(post_id: int, reason: str) -> None:
    Post.objects.filter(pk=post_id, state=Post.State.NEW).update(
        state=Post.State.FAILED, error=reason, updated_at=timezone.now()
    )


def post_prepare(*, post_id: int) -> str:
    """Fetch a new post's photo if it has none yet, then tag it. Returns the post's state.

    Stale input is quiet: a post that is gone or no longer new is left as it is.
    """
    post = Post.objects.filter(pk=post_id).first()
    if post is None or post.state != Post.State.NEW:
        return post.state if post else "gone"
    if not post.image:
        try:
            with SafeFetcher(_fetch_policy()) as fetcher:
                data = fetcher.fetch(post.image_url, accept="image/*").content
            stored = _image_store(data)
        except FetchError as exc:
            _fail(post_id, f"The image URL could not be fetched: {exc.reason}")
            return Post.State.FAILED
        except ImageRejectedError as exc:
            _fail(post_id, f"The image at the URL cannot be used: {exc.reason}")
            return Post.State.FAILED
        updated = Post.objects.filter(pk=post_id, state=Post.State.NEW, image="").update(
            image=stored.image, thumbnail=stored.thumbnail,
            width=stored.width, height=stored.height,
        )  # fmt: skip
        if not updated:  # removed (or fetched by another worker) meanwhile
            _files_delete(stored.image, stored.thumbnail)
            return Post.objects.filter(pk=post_id).values_list("state", flat=True).first() or ""
    return post_tag(post_id=post_id)


def _suggestion_groups(results: SceneResults) -> list[tuple[SceneRegion | None, list[SceneHit]]]:
    """The ranking's products by the region each is placed under (None: no region), in the
    regions' order with the region-less last; each keeps its rank in `results.hits`."""
    groups: dict[int | None, list[SceneHit]] = {}
    for hit in results.hits:
        groups.setdefault(hit.region, []).append(hit)
    order = sorted(groups, key=lambda index: (index is None, index or 0))
    return [(None if i is None else results.regions[i], groups[i]) for i in order]


def post_tag(*, post_id: int) -> str:
    """Suggest the photo's products as the shopper's photo search ranks them (the scene
    ranking: regions, the lookbooks whose covers share its items, popularity, the graph),
    the first `TAG_SUGGESTIONS`, each under the region it matches best; products found with
    no region (by the lookbooks they share with the photo's items) are tagged in a region
    that is the whole photo. A tag's rank is its place in the whole ranking. Returns the
    post's state afterwards."""
    from search.looks.selectors import scene_search
    from search.selectors import SearchUnavailable

    post = Post.objects.filter(pk=post_id).first()
    if post is None or post.state != Post.State.NEW or not post.image:
        return post.state if post else "gone"
    try:
        with post.image.open("rb") as handle:
            data = handle.read()
        results = scene_search(image=data, limit=TAG_SUGGESTIONS)
    except SearchUnavailable:
        _fail(post_id, "No embedding model is active yet: tag the post again once one is.")
        return Post.State.FAILED
    except (ValueError, OSError) as exc:
        _fail(post_id, f"The photo could not be tagged: {exc}")
        return Post.State.FAILED
    with transaction.atomic():
        post = Post.objects.select_for_update().filter(pk=post_id).first()
        if post is None or post.state != Post.State.NEW:
            return post.state if post else "gone"
        post.regions.all().delete()
        rank = {hit.product.pk: n for n, hit in enumerate(results.hits)}
        for index, (found, hits) in enumerate(_suggestion_groups(results)):
            # A region's tags score by their cosine with it; the whole photo's by the ranking.
            scores = [hit.score if found is None else hit.region_score for hit in hits]
            left, top, right, bottom = WHOLE_PHOTO if found is None else found.box
            region = PostRegion.objects.create(
                post=post, index=index, left=left, top=top, right=right, bottom=bottom,
                category=found.category if found else "",
                score=max(s for s in scores if s is not None),
            )  # fmt: skip
            PostTag.objects.bulk_create(
                PostTag(region=region, product=hit.product, rank=rank[hit.product.pk], score=score)
                for hit, score in zip(hits, scores, strict=True)
            )
        post.state = Post.State.TAGGED
        post.error = ""
        post.tagged_at = timezone.now()
        post.save(update_fields=["state", "error", "tagged_at", "updated_at"])
    return post.state


def post_retag(*, post: Post) -> Post:
    """Tag a failed, tagged or rejected post again from scratch (its tags are replaced)."""
    if post.state not in (Post.State.FAILED, Post.State.TAGGED, Post.State.REJECTED):
        raise PostRefusedError(f"A {post.get_state_display().lower()} post cannot be re-tagged.")
    with transaction.atomic():
        Post.objects.filter(pk=post.pk).update(
            state=Post.State.NEW, error="", updated_at=timezone.now()
        )
        _prepare_later(post.pk)
    post.refresh_from_db()
    return post


# --- Review --------------------------------------------------------------------------------
def _locked(post: Post) -> Post:
    return Post.objects.select_for_update().get(pk=post.pk)


def _reviewable(post: Post) -> None:
    if post.state not in (Post.State.TAGGED, Post.State.PUBLISHED):
        raise PostRefusedError(
            f"Tags of a {post.get_state_display().lower()} post cannot be changed."
        )


def _unpublish_if_bare(post: Post) -> None:
    """A published post left with no approved tag has nothing to shop: back to review."""
    if post.state == Post.State.PUBLISHED and not _approved(post).exists():
        post.state = Post.State.TAGGED
        post.published_at = None
        post.save(update_fields=["state", "published_at", "updated_at"])


def _approved(post: Post) -> QuerySet[PostTag]:
    return PostTag.objects.filter(region__post=post, state=PostTag.State.APPROVED)


def _tag_change(tag: PostTag, change: Callable[[PostTag], None]) -> PostTag:
    with transaction.atomic():
        post = _locked(tag.region.post)
        _reviewable(post)
        tag = PostTag.objects.select_for_update().get(pk=tag.pk)
        change(tag)
        _unpublish_if_bare(post)
    return tag


def post_tag_approve(*, tag: PostTag) -> PostTag:
    def approve(tag: PostTag) -> None:
        tag.state = PostTag.State.APPROVED
        tag.save(update_fields=["state"])

    return _tag_change(tag, approve)


def post_tag_reject(*, tag: PostTag) -> PostTag:
    """Remove a tag from the post (kept as rejected, so re-review shows what was refused)."""

    def reject(tag: PostTag) -> None:
        tag.state = PostTag.State.REJECTED
        tag.save(update_fields=["state"])

    return _tag_change(tag, reject)


def post_tag_replace(*, tag: PostTag, product: Product) -> PostTag:
    """Tag another product in the tag's place (approved: the merchandiser chose it)."""

    def replace(tag: PostTag) -> None:
        if tag.product_id == product.pk:
            tag.state = PostTag.State.APPROVED
            tag.save(update_fields=["state"])
            return
        if PostTag.objects.filter(region_id=tag.region_id, product=product).exists():
            raise PostRefusedError(f"{product.sku} is already tagged in this region.")
        if tag.suggested_product_id is None:
            tag.suggested_product_id = tag.product_id
        tag.product = product
        tag.score = None  # the merchandiser's choice, not the model's
        tag.state = PostTag.State.APPROVED
        tag.save(update_fields=["product", "suggested_product", "score", "state"])

    return _tag_change(tag, replace)


def post_region_add(
    *, post: Post, box: tuple[float, float, float, float], product: Product | None = None
) -> PostRegion:
    """A region the tagger missed, drawn by a merchandiser (left, top, right, bottom as
    fractions of the photo): its suggestions come from a photo search of that crop, as a
    shopper's crop box would find them; a product the merchandiser names is tagged there,
    approved."""
    from search.selectors import CropBox, SearchFilters, SearchUnavailable, search_by_image

    _reviewable(post)
    left, top, right, bottom = box
    try:
        crop = CropBox(left=left, top=top, right=right, bottom=bottom)
    except ValueError as exc:
        raise PostRefusedError(str(exc), field="box") from exc
    if min(right - left, bottom - top) < MIN_REGION_SIDE:
        raise PostRefusedError(
            f"Draw a region at least {MIN_REGION_SIDE:.0%} of the photo wide and high.",
            field="box",
        )
    try:
        with post.image.open("rb") as handle:
            hits = search_by_image(
                image=handle.read(), crop=crop, filters=SearchFilters(),
                limit=SUGGESTIONS_PER_REGION, diversify=False,
            ).hits  # fmt: skip
    except SearchUnavailable as exc:
        raise PostRefusedError("No embedding model is active yet to suggest products.") from exc
    with transaction.atomic():
        post = _locked(post)
        _reviewable(post)
        last = post.regions.aggregate(last=Max("index"))["last"]
        index = 0 if last is None else last + 1
        region = PostRegion.objects.create(
            post=post, index=index, left=left, top=top, right=right, bottom=bottom,
            category=hits[0].product.category if hits else "",
            score=hits[0].score if hits else 0.0,
        )  # fmt: skip
        PostTag.objects.bulk_create(
            PostTag(region=region, product=hit.product, rank=rank, score=hit.score)
            for rank, hit in enumerate(hits)
        )
        if product is not None:
            tag, _ = PostTag.objects.get_or_create(
                region=region, product=product, defaults={"rank": len(hits)}
            )
            tag.state = PostTag.State.APPROVED
            tag.save(update_fields=["state"])
    return region


def post_publish(*, post: Post) -> Post:
    """Publish a tagged post: it then shows on its page, on its products' pages ("Seen in")
    and in the API. Refused without recorded rights or without an approved tag."""
    with transaction.atomic():
        post = _locked(post)
        if post.rights != Post.Rights.GRANTED:
            raise PostRefusedError(RIGHTS_MISSING, field="rights")
        if post.state == Post.State.PUBLISHED:
            return post
        if post.state != Post.State.TAGGED:
            raise PostRefusedError(
                f"Only a tagged post can be published; this one is "
                f"{post.get_state_display().lower()}."
            )
        if not post.image:
            raise PostRefusedError("The post has no photo.")
        if not _approved(post).exists():
            raise PostRefusedError("Approve at least one tag before publishing.")
        post.state = Post.State.PUBLISHED
        post.published_at = timezone.now()
        post.save(update_fields=["state", "published_at", "updated_at"])
    return post


def post_unpublish(*, post: Post) -> Post:
    with transaction.atomic():
        post = _locked(post)
        if post.state == Post.State.PUBLISHED:
            post.state = Post.State.TAGGED
            post.published_at = None
            post.save(update_fields=["state", "published_at", "updated_at"])
    return post


def post_reject(*, post: Post) -> Post:
    """Leave the post out of the storefront (unpublished if it was published)."""
    with transaction.atomic():
        post = _locked(post)
        if post.state == Post.State.REMOVED:
            raise PostRefusedError("A removed post cannot be rejected.")
        post.state = Post.State.REJECTED
        post.published_at = None
        post.save(update_fields=["state", "published_at", "updated_at"])
    return post


def post_update(
    *,
    post: Post,
    caption: str,
    creator_handle: str,
    post_url: str,
    rights: str,
    rights_note: str,
) -> Post:
    """Edit the post's details; rights taken back (not granted any more) unpublish it."""
    with transaction.atomic():
        locked = _locked(post)
        if locked.state == Post.State.REMOVED:
            raise PostRefusedError("A removed post cannot be edited.")
        locked.caption = caption
        locked.creator_handle = creator_handle.lstrip("@")
        locked.post_url = post_url
        locked.rights = rights
        locked.rights_note = rights_note
        if locked.state == Post.State.PUBLISHED and rights != Post.Rights.GRANTED:
            locked.state = Post.State.TAGGED
            locked.published_at = None
        locked.save()
    return locked


def post_removal_request(*, post: Post, note: str = "") -> Post:
    """The creator asked for the post to be taken down: unpublish it, delete its photo and
    thumbnail files and its regions and tags, clear the caption; keep the row as the record
    (and so that a feed naming the post again is refused)."""
    with transaction.atomic():
        post = _locked(post)
        names = (post.image.name, post.thumbnail.name)
        post.regions.all().delete()
        now = timezone.now()
        post.state = Post.State.REMOVED
        post.published_at = None
        post.removed_at = now
        post.image = ""
        post.thumbnail = ""
        post.caption = ""
        post.error = ""
        record = f"Removal requested {now:%Y-%m-%d %H:%M} UTC" + (f": {note}" if note else "")
        post.rights_note = "\n".join(filter(None, [post.rights_note, record]))
        post.save()
        # After commit: a rolled-back request must not leave the post without its photo.
        transaction.on_commit(lambda: _files_delete(*names))
    return post


def post_delete(*, post: Post) -> None:
    """Delete a post and, once that is committed, its photo files."""
    names = (post.image.name, post.thumbnail.name)
    with transaction.atomic():
        post.delete()
        transaction.on_commit(lambda: _files_delete(*names))


# --- Feeds ---------------------------------------------------------------------------------
def post_feed_create(
    *, upload: UploadedFile | None = None, url: str = "", created_by_id: int | None = None
) -> PostFeed:
    """Queue a feed of posts for a worker: an uploaded file, or a URL the worker fetches."""
    from search.posts import tasks

    url = url.strip()
    if (upload is None) == (not url):
        raise PostRefusedError("Give either a feed file or a feed URL.", field="file")
    if url and not http_url(url):
        raise PostRefusedError("A feed URL starts with http:// or https://.", field="url")
    if upload is not None and upload.size and upload.size > FEED_MAX_BYTES:
        raise PostRefusedError(
            f"The feed is {upload.size:,} bytes; the limit is {FEED_MAX_BYTES:,}.", field="file"
        )
    with transaction.atomic():
        feed = PostFeed(created_by_id=created_by_id)
        if upload is not None:
            feed.name = str(upload.name)[:300]
            feed.upload.save(f"{uuid.uuid4().hex}-{upload.name}"[:100], upload, save=False)
        else:
            feed.name, feed.source_url = url[:300], url
        feed.save()
        feed_id = feed.pk
        transaction.on_commit(lambda: tasks.post_feed_process_task.delay(feed_id=feed_id))
    return feed


def _feed_fetch(feed: PostFeed) -> None:
    """Fetch a URL feed into its `upload` (public addresses only, FEED_MAX_BYTES at most)."""
    policy = replace(_fetch_policy(), max_bytes=FEED_MAX_BYTES)
    with SafeFetcher(policy) as fetcher:
        data = fetcher.fetch(feed.source_url, accept=FEED_ACCEPT).content
    feed.upload.save(f"{uuid.uuid4().hex}-feed"[:100], ContentFile(data), save=False)
    PostFeed.objects.filter(pk=feed.pk).update(upload=feed.upload.name)


def _feed_failed(feed_id: int, reason: str) -> str:
    PostFeed.objects.filter(pk=feed_id).update(
        state=PostFeed.State.FAILED, error=reason, finished_at=timezone.now()
    )
    return PostFeed.State.FAILED


def _row_error(feed_id: int, row: int, field: str, reason: str) -> None:
    with transaction.atomic():  # the error and its count together: a resume counts on it
        PostFeedRowError.objects.create(feed_id=feed_id, row=row, field=field, reason=reason)
        PostFeed.objects.filter(pk=feed_id).update(
            failed_rows=F("failed_rows") + 1, heartbeat_at=timezone.now()
        )


def _feed_row_import(*, feed_id: int, row: PostRow, fetcher: SafeFetcher) -> None:
    """One feed row into the inbox, or its error (raised as PostRefusedError)."""
    _refuse_duplicate(post_url=row.post_url, image_url=row.image_url)
    try:
        data = fetcher.fetch(row.image_url, accept="image/*").content
        stored = _image_store(data)
    except FetchError as exc:
        raise PostRefusedError(
            f"could not fetch the image: {exc.reason}", field="image_url"
        ) from exc
    except ImageRejectedError as exc:
        raise PostRefusedError(
            f"the image cannot be used: {exc.reason}", field="image_url"
        ) from exc
    with transaction.atomic():
        post = Post.objects.create(
            source=Post.Source.FEED, feed_id=feed_id, image_url=row.image_url,
            image=stored.image, thumbnail=stored.thumbnail, width=stored.width,
            height=stored.height, caption=row.caption, creator_handle=row.creator_handle,
            post_url=row.post_url, rights=row.rights,
        )  # fmt: skip
        PostFeed.objects.filter(pk=feed_id).update(
            done_rows=F("done_rows") + 1, heartbeat_at=timezone.now()
        )
        _prepare_later(post.pk)


def post_feed_process(*, feed_id: int) -> str:
    """Read a queued feed (fetching it first when it came as a URL) row by row: each good
    row becomes a new post (its photo fetched through the safe fetcher) queued for tagging;
    each bad row is recorded with its reason.
    The counts are written after every row (with the row's post or error, in one
    transaction), so the admin shows the progress as it goes, and a feed whose worker died
    (running, heartbeat older than FEED_STALE_SECONDS) resumes after the rows counted when
    its task is delivered again. Returns the feed's end state; a feed that is final, or
    running on a live worker, is left alone."""
    now = timezone.now()
    stale = now - timedelta(seconds=FEED_STALE_SECONDS)
    claimed = (
        PostFeed.objects.filter(pk=feed_id)
        .filter(
            Q(state=PostFeed.State.QUEUED) | Q(state=PostFeed.State.RUNNING, heartbeat_at__lt=stale)
        )
        .update(
            state=PostFeed.State.RUNNING,
            started_at=Coalesce("started_at", Value(now)),
            heartbeat_at=now,
        )
    )
    if not claimed:
        return PostFeed.objects.filter(pk=feed_id).values_list("state", flat=True).first() or ""
    feed = PostFeed.objects.get(pk=feed_id)
    try:
        if not feed.upload:
            _feed_fetch(feed)
        with feed.upload.open("rb") as handle:
            data = handle.read()
        rows = list(feed_rows(data, name=feed.name))
    except FetchError as exc:
        return _feed_failed(feed_id, f"The feed could not be fetched: {exc.reason}")
    except (PostFeedError, OSError) as exc:
        return _feed_failed(feed_id, str(exc))
    PostFeed.objects.filter(pk=feed_id).update(total_rows=len(rows))
    handled = feed.done_rows + feed.failed_rows  # by an earlier, interrupted run
    with SafeFetcher(_fetch_policy()) as fetcher:
        for row in rows[handled:]:
            if isinstance(row, RowProblem):
                _row_error(feed_id, row.row, row.field, row.reason)
                continue
            try:
                _feed_row_import(feed_id=feed_id, row=row, fetcher=fetcher)
            except PostRefusedError as exc:
                _row_error(feed_id, row.row, exc.field, exc.reason)
    feed.refresh_from_db()
    if feed.failed_rows == 0:
        state, error = PostFeed.State.SUCCEEDED, ""
    elif feed.done_rows:
        state, error = PostFeed.State.PARTLY, ""
    else:
        state, error = PostFeed.State.FAILED, "No row of the feed became a post: see the rows."
    PostFeed.objects.filter(pk=feed_id).update(state=state, error=error, finished_at=timezone.now())
    return state


# --- Lost work ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepResult:
    feeds: list[int]
    posts: list[int]


def posts_sweep(*, stale_after_seconds: int = FEED_STALE_SECONDS) -> SweepResult:
    """Send again the tasks of feeds and posts whose task was lost (a broker restarted
    without its queue, a worker killed before acknowledging): feeds queued or running with
    no sign of life for `stale_after_seconds`, and new posts untouched as long. Queued feeds
    and posts are stamped when sent, so one waiting behind a long queue is sent again once
    per period; a running feed that lost its worker is sent until one claims it. A delivery
    that finds the work claimed or done leaves it alone."""
    from search.posts import tasks

    now = timezone.now()
    stale = now - timedelta(seconds=stale_after_seconds)
    with transaction.atomic():
        feeds = list(
            PostFeed.objects.select_for_update(skip_locked=True)
            .filter(state__in=(PostFeed.State.QUEUED, PostFeed.State.RUNNING))
            .annotate(seen=Coalesce("heartbeat_at", "created_at"))
            .filter(seen__lt=stale)
            .values_list("pk", flat=True)
        )
        # A queued feed's stamp only; a running one's own claim needs its old heartbeat.
        PostFeed.objects.filter(pk__in=feeds, state=PostFeed.State.QUEUED).update(heartbeat_at=now)
        posts = list(
            Post.objects.select_for_update(skip_locked=True)
            .filter(state=Post.State.NEW, updated_at__lt=stale)
            .values_list("pk", flat=True)
        )
        Post.objects.filter(pk__in=posts).update(updated_at=now)
        for feed_id in feeds:
            transaction.on_commit(
                functools.partial(tasks.post_feed_process_task.delay, feed_id=feed_id)
            )
        for post_id in posts:
            transaction.on_commit(functools.partial(tasks.post_prepare_task.delay, post_id=post_id))
    if feeds or posts:
        log.warning("sent again: post feeds %s, posts %s (their tasks were lost)", feeds, posts)
    return SweepResult(feeds=feeds, posts=posts)
