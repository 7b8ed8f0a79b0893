"""The embedding registry (model versions) and the vectors each version computed.

Every stored vector names the model version that made it, so a new version is built beside
the active one and switched over atomically (see `embeddings.services`). The HNSW indexes are
partial (one per version and kind) and are created at run time, not in migrations, because
versions are data: see `embeddings.services.indexes.embedding_model_indexes_create`.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from pgvector.django import HalfVectorField

from catalog.models import Product


class EmbeddingModel(models.Model):
    """One model version: a spec (what to load) plus its life cycle.

    building -> ready -> active -> ready (after another activation; rollback target)
    -> retired (vectors deleted). `failed` means the spec could not be loaded: `error` says
    why; nothing retries it automatically except the bundled default once its weights exist.
    """

    class State(models.TextChoices):
        BUILDING = "building", "Building"
        READY = "ready", "Ready"
        ACTIVE = "active", "Active"
        RETIRED = "retired", "Retired"
        FAILED = "failed", "Failed"

    key = models.SlugField(max_length=100, unique=True, help_text="e.g. default-v1")
    spec = models.CharField(
        max_length=1000,
        help_text="default, checkpoint:<dir>, open_clip:<arch>:<tag> or open_clip:hf-hub:<repo>",
    )
    # Known once a worker has loaded the model (registration itself never imports torch).
    dimension = models.PositiveIntegerField(null=True, blank=True)
    weights_sha256 = models.CharField(max_length=200, blank=True)
    state = models.CharField(
        max_length=16, choices=State.choices, default=State.BUILDING, db_index=True
    )
    error = models.TextField(blank=True, help_text="Why loading failed, if it did")
    # Activate by itself when the backfill completes (operators usually evaluate first).
    auto_activate = models.BooleanField(default=False)
    metrics = models.JSONField(default=dict, blank=True, help_text="Evaluation results")
    activation_reason = models.TextField(
        blank=True,
        help_text="Why it was activated without beating the active version (who, when, why)",
    )
    # {"<kind>": mean stored vector (list of floats), "count": fused vectors averaged,
    # "text_query_map": when the version's TextQueryMap was fitted (search's cache stamp)}.
    centroids = models.JSONField(default=dict, blank=True, help_text="Mean vector per kind")
    backfill_total = models.PositiveIntegerField(default=0)
    backfill_done = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    prepared_at = models.DateTimeField(null=True, blank=True, help_text="Loaded and indexed")
    activated_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Search reads "the" active version: the database, not the code, keeps it unique.
            models.UniqueConstraint(
                fields=["state"], condition=Q(state="active"), name="embedding_model_one_active"
            )
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.state})"

    @property
    def is_prepared(self) -> bool:
        """True once a worker loaded the model and its indexes exist (vectors can be written)."""
        return self.dimension is not None and self.prepared_at is not None

    @property
    def backfill_percent(self) -> int:
        """Products embedded by this version as a whole percentage of those to embed."""
        if not self.backfill_total:
            return 100 if self.is_prepared else 0
        return min(100, round(100 * self.backfill_done / self.backfill_total))


class TextQueryMap(models.Model):
    """A version's linear map from text vectors to fused vectors, fitted on its catalog.

    Text search ranks products by the fused vector a product described by the shopper's
    words would have, predicted by this map (see
    `embeddings.services.centroids.text_query_map_fit`), rather than by the words' own
    vector, which sits across the modality gap.
    """

    model = models.OneToOneField(
        EmbeddingModel, on_delete=models.CASCADE, related_name="text_query_map"
    )
    # float32, little-endian, shape (dimension + 2, dimension): the map's rows, then the
    # mean text vector and the mean fused vector it was centred on.
    matrix = models.BinaryField()
    pairs = models.PositiveIntegerField(help_text="(text, fused) vector pairs fitted on")
    fit_cosine = models.FloatField(
        help_text="Mean cosine between a product's mapped text vector and its fused vector"
    )
    fitted_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"text query map of {self.model.key} ({self.pairs} pairs)"


class ProductEmbedding(models.Model):
    """One vector of one product by one model version; unique per (product, model, kind)."""

    class Kind(models.TextChoices):
        IMAGE = "image", "Image"
        TEXT = "text", "Text"
        FUSED = "fused", "Fused (image + text)"

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="embeddings")
    model = models.ForeignKey(EmbeddingModel, on_delete=models.CASCADE, related_name="vectors")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    # No fixed dimension: versions of different sizes share the table; the partial HNSW
    # indexes cast to halfvec(<dim>) per version.
    vector = HalfVectorField()
    content_hash = models.CharField(max_length=64, help_text="Product.content_hash it encodes")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["product", "model", "kind"], name="product_embedding_unique"
            )
        ]
        indexes = [models.Index(fields=["model", "kind"], name="product_embedding_model_kind")]

    def __str__(self) -> str:
        return f"{self.kind} vector of product {self.product_id} by model {self.model_id}"


#: Every vector kind a product gets from each version (the one list the app uses).
KINDS: tuple[str, ...] = tuple(ProductEmbedding.Kind.values)


class PendingEmbedding(models.Model):
    """A product queued for embedding by one model version (the queue's de-duplication).

    Enqueueing inserts a row and sends a task only for rows it inserted (or whose lease ran
    out, in case a message was lost), so the sweeper and imports never queue a product twice;
    the task deletes the row when done.
    """

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+")
    model = models.ForeignKey(EmbeddingModel, on_delete=models.CASCADE, related_name="+")
    enqueued_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["product", "model"], name="pending_embedding_unique")
        ]

    def __str__(self) -> str:
        return f"product {self.product_id} queued for model {self.model_id}"


class TrainingJob(models.Model):
    """One fine-tuning run on the catalog, from the admin or `train_model`, and its progress.

    queued -> running -> succeeded | failed | cancelled; running -> interrupted when the
    training worker shuts down (its train state is saved, and it is queued again when a
    training worker starts). A failed, cancelled or interrupted job can be resumed: the run
    continues from the last saved step in `out_dir`.
    """

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        INTERRUPTED = "interrupted", "Interrupted (resumes)"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    base = models.CharField(max_length=1000, help_text="Model spec it fine-tunes, or new:<arch>")
    key = models.SlugField(max_length=100, blank=True, help_text="Version key it registers")
    out_dir = models.CharField(max_length=2000, help_text="Checkpoint and train-state folder")
    config = models.JSONField(default=dict, blank=True, help_text="TrainConfig overrides")
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    phase = models.CharField(max_length=300, blank=True, help_text="What the run does now")
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    losses = models.JSONField(default=dict, blank=True, help_text="Last step's loss terms")
    # The rate behind the ETA is measured from where this attempt started (a resumed run
    # must not count the steps it loaded from its checkpoint as done in no time).
    attempt_started_at = models.DateTimeField(null=True, blank=True)
    attempt_start_step = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    log = models.TextField(blank=True, help_text="The last lines of the run's log")
    error = models.TextField(blank=True, help_text="Why the run failed, if it did")
    cancel_requested = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    model = models.ForeignKey(
        EmbeddingModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"training job #{self.pk}"

    @property
    def is_final(self) -> bool:
        """True once nothing will happen to the job unless someone resumes it."""
        return self.state in (self.State.SUCCEEDED, self.State.FAILED, self.State.CANCELLED)

    @property
    def progress_percent(self) -> int:
        if self.state == self.State.SUCCEEDED:
            return 100
        if not self.total_steps:
            return 0
        return min(100, round(100 * self.step / self.total_steps))

    @property
    def loss(self) -> float | None:
        value = self.losses.get("loss") if isinstance(self.losses, dict) else None
        return float(value) if value is not None else None
