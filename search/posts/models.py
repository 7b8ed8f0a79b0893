"""Shoppable posts: a photo from a creator or customer, its item regions, and the products
tagged in each.

A post moves new → tagged (the worker found its regions and suggested products) →
published or rejected by a merchandiser; `failed` records why fetching or tagging did not
work (`error`), and `removed` is a post whose creator asked for it to be taken down: its
image files and tags are gone, the row stays so the same post is not imported again.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.urls import reverse

from catalog.models import Product

#: The box of a region that is the whole photo (left, top, right, bottom).
WHOLE_PHOTO = (0.0, 0.0, 1.0, 1.0)


class Post(models.Model):
    class State(models.TextChoices):
        NEW = "new", "New"  # waiting for its image and tags (a worker is on it)
        TAGGED = "tagged", "Tagged"  # suggestions ready for review
        PUBLISHED = "published", "Published"
        REJECTED = "rejected", "Rejected"
        FAILED = "failed", "Failed"  # the image could not be fetched or tagged: see `error`
        REMOVED = "removed", "Removed at the creator's request"

    class Rights(models.TextChoices):
        NONE = "none", "Not recorded"
        REQUESTED = "requested", "Requested, no answer yet"
        GRANTED = "granted", "Granted"
        DENIED = "denied", "Denied"

    class Source(models.TextChoices):
        UPLOAD = "upload", "Upload"
        URL = "url", "Image URL"
        FEED = "feed", "Feed"

    state = models.CharField(max_length=16, choices=State.choices, default=State.NEW)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.UPLOAD)
    image_url = models.CharField(
        "image URL", max_length=2000, blank=True, help_text="Where the photo was fetched from"
    )
    # Stored photo (re-encoded JPEG without metadata) and its thumbnail; names are random
    # per post, never shared, so a removal request can delete them.
    image = models.ImageField(upload_to="posts/", blank=True)
    thumbnail = models.ImageField(upload_to="posts/thumbs/", blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    caption = models.TextField(blank=True)
    creator_handle = models.CharField(max_length=200, blank=True, db_index=True)
    post_url = models.URLField("post URL", max_length=2000, blank=True, db_index=True)
    rights = models.CharField(
        "rights", max_length=16, choices=Rights.choices, default=Rights.NONE,
        help_text="Only posts whose creator granted the rights can be published.",
    )  # fmt: skip
    rights_note = models.TextField(
        blank=True, help_text="How the rights were recorded (who, when, where)"
    )
    error = models.TextField(blank=True, help_text="Why fetching or tagging failed")
    feed = models.ForeignKey(
        "posts.PostFeed", null=True, blank=True, on_delete=models.SET_NULL, related_name="posts"
    )
    created_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    tagged_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "-published_at"], name="post_state_published")]
        constraints = [
            # The rights rule, held by the database too: no code path publishes without them.
            models.CheckConstraint(
                condition=~Q(state="published") | Q(rights="granted"),
                name="post_published_needs_rights",
            )
        ]

    def __str__(self) -> str:
        who = f"@{self.creator_handle}" if self.creator_handle else "unknown creator"
        return f"Post #{self.pk} by {who}"

    def get_absolute_url(self) -> str:
        return reverse("posts:post-detail", kwargs={"post_id": self.pk})


class PostRegion(models.Model):
    """One item region of a post's photo, as the tagger found it."""

    post = models.ForeignKey(Post, on_delete=models.CASCADE, related_name="regions")
    index = models.PositiveSmallIntegerField()
    # left, top, right, bottom as fractions 0..1 of the photo
    left = models.FloatField()
    top = models.FloatField()
    right = models.FloatField()
    bottom = models.FloatField()
    category = models.CharField(max_length=200, blank=True)
    score = models.FloatField(
        help_text="Cosine of the region's best match; for the whole photo, its best tag's score"
    )

    class Meta:
        ordering = ["post_id", "index"]
        constraints = [
            models.UniqueConstraint(fields=["post", "index"], name="post_region_unique_index")
        ]

    def __str__(self) -> str:
        return f"{self.post} region {self.index}"

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.left, self.top, self.right, self.bottom)

    @property
    def is_whole_photo(self) -> bool:
        """The tagger's place for products the scene ranking found with no region of their
        own (through the lookbooks they share with the photo's items): a tag needs a region,
        and the whole photo is where such a product is."""
        return self.box == WHOLE_PHOTO

    @property
    def centre_percent(self) -> tuple[float, float]:
        return (round(50 * (self.left + self.right), 2), round(50 * (self.top + self.bottom), 2))

    @property
    def percent_box(self) -> tuple[float, float, float, float]:
        """left, top, width, height in percent of the photo (for drawing the box)."""
        return (
            round(100 * self.left, 2),
            round(100 * self.top, 2),
            round(100 * (self.right - self.left), 2),
            round(100 * (self.bottom - self.top), 2),
        )

    @property
    def label(self) -> str:
        """The category's last part ("Sofa" of "Furniture > Sofa")."""
        if self.is_whole_photo and not self.category:
            return "Also in the photo"
        return self.category.rsplit(">", 1)[-1].strip() or "item"


class PostTag(models.Model):
    """A product tagged in a region: suggested by the tagger, then approved or rejected.

    Replacing the product keeps what was suggested in `suggested_product`.
    """

    class State(models.TextChoices):
        SUGGESTED = "suggested", "Suggested"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    region = models.ForeignKey(PostRegion, on_delete=models.CASCADE, related_name="tags")
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="post_tags")
    suggested_product = models.ForeignKey(
        Product, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    rank = models.PositiveSmallIntegerField(default=0)
    score = models.FloatField(
        null=True,
        blank=True,
        help_text="Cosine with the region; in the whole photo, the scene ranking's score",
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.SUGGESTED)

    class Meta:
        ordering = ["region_id", "rank", "id"]
        constraints = [
            models.UniqueConstraint(fields=["region", "product"], name="post_tag_unique_product")
        ]

    def __str__(self) -> str:
        return f"{self.region} · {self.product.sku}"


class PostFeed(models.Model):
    """A feed of posts (CSV or JSON), uploaded or fetched from a URL, read row by row by a
    worker."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        PARTLY = "partly", "Partly imported"
        FAILED = "failed", "Failed"

    FINAL_STATES = frozenset({State.SUCCEEDED, State.PARTLY, State.FAILED})

    name = models.CharField(max_length=300, help_text="The uploaded file's name, or the URL")
    #: Fetched (through the safe fetcher) by the worker into `upload` before the first row,
    #: so a resumed feed reads the same rows even if the URL's content changed meanwhile.
    source_url = models.CharField(
        "feed URL", max_length=2000, blank=True, help_text="Where the feed is fetched from"
    )
    upload = models.FileField(upload_to="post-feeds/", blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    total_rows = models.PositiveIntegerField(default=0)
    done_rows = models.PositiveIntegerField(default=0)
    failed_rows = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, help_text="Why the whole feed failed, if it did")
    created_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    #: Written with every row's counts: a running feed whose heartbeat is old lost its
    #: worker, and the next delivery of its task resumes after the rows already counted.
    #: Also stamped when the sweeper sends a queued feed's task again.
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Post feed #{self.pk} ({self.name})"

    @property
    def progress_percent(self) -> int:
        if not self.total_rows:
            return 100 if self.state in self.FINAL_STATES else 0
        return min(100, round(100 * (self.done_rows + self.failed_rows) / self.total_rows))


class PostFeedRowError(models.Model):
    """One feed row that did not become a post, and why."""

    feed = models.ForeignKey(PostFeed, on_delete=models.CASCADE, related_name="row_errors")
    row = models.PositiveIntegerField(help_text="1 = the first post in the file")
    field = models.CharField(max_length=100, blank=True)
    reason = models.TextField()

    class Meta:
        ordering = ["feed_id", "row", "id"]

    def __str__(self) -> str:
        return f"row {self.row} {self.field}: {self.reason}"
