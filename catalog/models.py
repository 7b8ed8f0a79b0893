"""The retailer's catalog: products, their images, curated lookbooks and imports."""

from __future__ import annotations

from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.urls import reverse


class TimestampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Product(TimestampedModel):
    """One sellable article, identified by the retailer's SKU."""

    sku = models.CharField("SKU", max_length=128, unique=True)
    title = models.CharField(max_length=500)
    description = models.TextField(blank=True)
    brand = models.CharField(max_length=200, blank=True, db_index=True)
    category = models.CharField(max_length=200, blank=True, db_index=True)
    # Variants of one product (colours, sizes) share a group id (GMC's item_group_id).
    group_id = models.CharField(max_length=128, blank=True, db_index=True)
    price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True, help_text="ISO 4217 code, e.g. EUR")
    in_stock = models.BooleanField(default=True, db_index=True)
    url = models.URLField("product URL", max_length=2000, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    # sha256 over the fields that feed the embeddings (text fields, attributes, image hashes).
    # A vector records the hash it was computed from, so "stale" is a comparison, and a
    # price or stock change (not hashed) never causes a re-embedding.
    content_hash = models.CharField(max_length=64, blank=True, db_index=True)

    class Meta:
        ordering = ["-updated_at", "id"]
        indexes = [
            GinIndex(fields=["attributes"], name="product_attributes_gin"),
            models.Index(fields=["price"], name="product_price_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.sku})"

    def get_absolute_url(self) -> str:
        return reverse("search:product-detail", kwargs={"sku": self.sku})

    @property
    def primary_image(self) -> ProductImage | None:
        """The first ready image by position (uses prefetched images when present)."""
        ready = [image for image in self.images.all() if image.status == ProductImage.Status.READY]
        return min(ready, key=lambda image: image.position) if ready else None


class ProductImage(TimestampedModel):
    """A product photo: where it came from, the normalised stored file and its state."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="images")
    position = models.PositiveSmallIntegerField(default=0)
    source_url = models.CharField(max_length=2000, blank=True, help_text="URL or feed path")
    image = models.ImageField(upload_to="products/", blank=True)
    thumbnail = models.ImageField(upload_to="products/thumbs/", blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["product_id", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["product", "position"], name="product_image_unique_position"
            )
        ]

    def __str__(self) -> str:
        return f"{self.product.sku} #{self.position}"


class Lookbook(TimestampedModel):
    """A curated board of products that go together (an outfit, a room)."""

    title = models.CharField(max_length=300)
    slug = models.SlugField(max_length=300, unique=True)
    description = models.TextField(blank=True)
    is_published = models.BooleanField("published", default=False, db_index=True)
    cover = models.ImageField(upload_to="lookbooks/", blank=True)
    # Where the cover came from (URL or feed path), so a re-import fetches it only when
    # the feed names a different one.
    cover_source = models.CharField(max_length=2000, blank=True)
    products = models.ManyToManyField(Product, through="LookbookItem", related_name="lookbooks")

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("search:lookbook-detail", kwargs={"slug": self.slug})


class LookbookItem(models.Model):
    lookbook = models.ForeignKey(Lookbook, on_delete=models.CASCADE, related_name="items")
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="lookbook_items")
    position = models.PositiveIntegerField(default=0)
    note = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["lookbook_id", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["lookbook", "product"], name="lookbook_item_unique")
        ]

    def __str__(self) -> str:
        return f"{self.lookbook} · {self.product}"


class ImportJob(TimestampedModel):
    """One run of the ingestion pipeline over a source (file, folder or URL)."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        PARTLY = "partly", "Partly imported"  # some rows imported, some failed
        FAILED = "failed", "Failed"

    #: States a job never leaves.
    FINAL_STATES = frozenset({State.SUCCEEDED, State.PARTLY, State.FAILED})

    source = models.CharField(max_length=2000, help_text="File name, folder or URL")
    source_format = models.CharField(max_length=32, blank=True)
    options = models.JSONField(default=dict, blank=True)
    upload = models.FileField(upload_to="imports/", blank=True)
    state = models.CharField(
        max_length=16, choices=State.choices, default=State.QUEUED, db_index=True
    )
    total_rows = models.PositiveIntegerField(default=0)
    done_rows = models.PositiveIntegerField(default=0)
    failed_rows = models.PositiveIntegerField(default=0)
    skipped_rows = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, help_text="Why the whole job failed, if it did")
    # Counts beyond the row totals: products created/updated/unchanged, images fetched,
    # lookbooks saved (filled in as the pipeline goes; shown by the admin and the API).
    stats = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The API key that started the job: that key alone reads it through the API (its source
    # URL and error rows may hold the brand's secrets); staff see every job.
    api_key = models.ForeignKey(
        "search.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The client's `Idempotency-Key` of `POST /api/v1/imports`: a retry with the same key
    # (by the same API key or staff user) is answered with this job instead of a new one.
    idempotency_key = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["api_key", "created_by", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                nulls_distinct=False,
                name="catalog_importjob_idempotency_key",
            )
        ]

    def __str__(self) -> str:
        return f"Import #{self.pk} of {self.source}"

    @property
    def progress_percent(self) -> int:
        """Rows finished (imported, failed or skipped) as a whole percentage of the total."""
        if not self.total_rows:
            return 100 if self.state in self.FINAL_STATES else 0
        finished = self.done_rows + self.failed_rows + self.skipped_rows
        return min(100, round(100 * finished / self.total_rows))


class ImportChunk(TimestampedModel):
    """A slice of an import's validated rows, staged as JSON between parse and upsert.

    Chunks make a crashed worker cheap: each one is upserted in a single transaction and
    its images are processed one by one (each idempotent), so redoing a chunk after a
    SIGKILL repeats only unfinished work. ``claimed_by``/``heartbeat_at`` form a lease:
    the sweeper re-queues chunks whose holder stopped beating.
    """

    class State(models.TextChoices):
        PENDING = "pending", "Pending"  # staged, not upserted yet
        UPSERTED = "upserted", "Upserted"  # products saved; images not all processed
        FINISHED = "finished", "Finished"

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    rows = models.JSONField(default=list, help_text="Validated ProductRow dicts")
    state = models.CharField(
        max_length=16, choices=State.choices, default=State.PENDING, db_index=True
    )
    done_rows = models.PositiveIntegerField(default=0)
    failed_rows = models.PositiveIntegerField(default=0)
    created_products = models.PositiveIntegerField(default=0)
    updated_products = models.PositiveIntegerField(default=0)
    claimed_by = models.CharField(max_length=64, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    #: Times a worker started on the chunk afresh (a crash, a kill, a sweeper re-queue);
    #: past ``catalog.services.MAX_CHUNK_ATTEMPTS`` its rows fail with ``error``.
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True, help_text="Why the last attempt crashed, if it did")

    class Meta:
        ordering = ["job_id", "index"]
        constraints = [
            models.UniqueConstraint(fields=["job", "index"], name="import_chunk_unique_index")
        ]

    def __str__(self) -> str:
        return f"Import #{self.job_id} chunk {self.index}"


class ImportRowError(models.Model):
    """One problem with one feed row, for the downloadable error report."""

    class Kind(models.TextChoices):
        FAILED = "failed", "Failed"  # the row was not imported (or its main image failed)
        SKIPPED = "skipped", "Skipped"  # deliberately not imported (a repeated SKU)
        WARNING = "warning", "Warning"  # imported, with a problem (an extra image failed)

    class File(models.TextChoices):
        FEED = "feed", "Feed"
        LOOKBOOKS = "lookbooks", "Lookbooks"

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="row_errors")
    chunk = models.ForeignKey(
        ImportChunk, null=True, blank=True, on_delete=models.CASCADE, related_name="row_errors"
    )
    file = models.CharField(max_length=16, choices=File.choices, default=File.FEED)
    row = models.PositiveIntegerField()
    field = models.CharField(max_length=100, blank=True)
    sku = models.CharField("SKU", max_length=300, blank=True)
    reason = models.TextField()
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.FAILED)

    class Meta:
        ordering = ["job_id", "file", "row", "id"]
        indexes = [models.Index(fields=["job", "kind"], name="import_row_error_job_kind")]

    def __str__(self) -> str:
        return f"row {self.row} {self.field}: {self.reason}"
