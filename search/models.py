"""API keys (secret and publishable), shoppers' query photos kept for a short while, shopper
events and A/B experiments."""

from __future__ import annotations

import re
from datetime import datetime

from django.contrib.postgres.fields import ArrayField
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


#: A query photo's id: the SHA-256 of its bytes in lowercase hex (see `QueryPhoto`). The one
#: check every way in (pages, API, selectors) applies, so anything else is refused before it
#: reaches the storage layer (no path tricks).
PHOTO_ID_RE = re.compile(r"^[0-9a-f]{64}$")


class QueryPhoto(models.Model):
    """A shopper's uploaded search photo, kept so that a results URL can name it and a new
    crop can be searched without uploading again.

    The id is the SHA-256 of the bytes: uploading the same photo twice stores it once, and
    the id cannot be guessed, so nobody can walk through other shoppers' photos. Rows and
    files are deleted VITRINE_QUERY_PHOTO_RETENTION_HOURS after the latest upload
    (`search.tasks.query_photos_purge_task`, run by Celery beat).
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


class CatalogWord(models.Model):
    """A word the catalog's product documents hold, as Postgres full text stems it.

    Rebuilt with the vocabulary. "No good match" asks whether a query names any of them
    (or a close misspelling, by the trigram index): words none of which the catalog holds
    ("sofa" in a clothing shop, gibberish) are unrelated whatever their vectors' cosine.
    """

    lexeme = models.CharField(max_length=200, unique=True)
    #: How many product documents hold it.
    product_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["lexeme"]

    def __str__(self) -> str:
        return f"{self.lexeme} ({self.product_count})"


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
    #: What the catalog's photos show by the image trunk's own classes: their mean class
    #: probabilities (`embeddings.ml.image_classes`), and the class score and energy under
    #: either of which a photo is "no good match" (null, and an empty profile: the
    #: version's trunk has no classifier, or they do not separate unrelated photos).
    image_class_profile = models.JSONField(default=list, blank=True)
    image_class_threshold = models.FloatField(null=True, blank=True)
    image_energy_threshold = models.FloatField(null=True, blank=True)
    #: How it was chosen: query counts, precision per weight set, score distributions.
    report = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        get_latest_by = "created_at"

    def __str__(self) -> str:
        return f"Search calibration of {self.model_id} ({self.catalog_stamp})"


class PublishableKey(models.Model):
    """A key for the brand's web pages: it is public by design (it sits in the page's HTML),
    so it can only call the read-only search endpoints and send shopper events, and only
    from the browser origins it lists (`search.storefront`). Distinct from `ApiKey`, whose
    secret must never reach a browser: the two are told apart by the `pk_` prefix.
    """

    name = models.CharField(max_length=200, help_text="Which site uses it, e.g. 'brand.com'")
    key = models.CharField(max_length=64, unique=True, editable=False)
    allowed_origins = ArrayField(
        models.CharField(max_length=255),
        help_text="Exact origins, e.g. https://www.brand.com (scheme, host and port)",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.key[:11]}…)"

    @property
    def is_usable(self) -> bool:
        return self.revoked_at is None


class Event(models.Model):
    """One shopper event (search, product view, impression, click, add to cart, purchase).

    The table is partitioned by month of `received_at` (created by SQL in the migration,
    hence unmanaged); whole months are dropped past VITRINE_EVENT_RETENTION_MONTHS
    (`search.events.services.event_partitions_maintain`). No personal data: the session is a
    random id the browser made, no address or user agent is stored. `model_key` and
    `experiment`/`arm` say which model version and A/B arm produced what the shopper saw.
    """

    class Type(models.TextChoices):
        SEARCH = "search", "Search"
        VIEW = "view", "Product page view"
        IMPRESSION = "impression", "Impression"
        CLICK = "click", "Click"
        ADD_TO_CART = "add_to_cart", "Add to cart"
        PURCHASE = "purchase", "Purchase"

    class Surface(models.TextChoices):
        TEXT_SEARCH = "text_search", "Text search"
        PHOTO_SEARCH = "photo_search", "Photo search"
        SIMILAR = "similar", "Similar items"
        COMPLETE_THE_LOOK = "complete_the_look", "Complete the look"
        OFTEN_BOUGHT_TOGETHER = "often_bought_together", "Often bought together"
        POSTS = "posts", "Shoppable posts"
        PRODUCT_PAGE = "product_page", "Product page"
        CHECKOUT = "checkout", "Checkout"

    id = models.BigAutoField(primary_key=True)  # the table's key is (id, received_at)
    received_at = models.DateTimeField()
    type = models.CharField(max_length=16, choices=Type.choices)
    surface = models.CharField(max_length=24, choices=Surface.choices)
    session_id = models.CharField(max_length=64)
    sku = models.CharField(max_length=255, blank=True)
    query = models.CharField(max_length=200, blank=True)
    results_count = models.IntegerField(null=True)
    position = models.SmallIntegerField(null=True)
    model_key = models.CharField(max_length=64, blank=True)
    experiment_id = models.IntegerField(null=True)
    arm = models.CharField(max_length=1, blank=True)
    source = models.CharField(max_length=32, help_text="The key that sent it (pk_… or prefix)")

    class Meta:
        managed = False
        db_table = "search_event"

    def __str__(self) -> str:
        return f"{self.type} {self.surface} {self.sku or self.query}"


class Experiment(models.Model):
    """An A/B test: shoppers' sessions are split by hash between arm A (control) and arm B.

    An arm is a model version (`model_key`) and ranking settings (`diversify`); empty
    `model_key` means the active version. At most one experiment runs at a time.
    """

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"
        PROMOTED = "promoted", "Promoted (B won)"

    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    a_model_key = models.CharField("A: model version", max_length=64, blank=True)
    a_diversify = models.BooleanField("A: diversify results", default=True)
    b_model_key = models.CharField("B: model version", max_length=64, blank=True)
    b_diversify = models.BooleanField("B: diversify results", default=True)
    b_percent = models.PositiveSmallIntegerField(
        "share of sessions in B (%)", default=50, help_text="1 to 99"
    )
    minimum_detectable_lift = models.FloatField(
        default=0.1, help_text="Relative CTR lift the test should detect, e.g. 0.1 for +10%"
    )
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"],
                condition=models.Q(status="running"),
                name="search_one_running_experiment",
            ),
            models.CheckConstraint(
                condition=models.Q(b_percent__gte=1, b_percent__lte=99),
                name="search_experiment_b_percent_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class CoEngagement(models.Model):
    """Two products engaged with in the same shopper sessions ("often bought together"),
    one row per direction, recomputed from the events by `search.events.coengagement`.

    `weight` sums, over the sessions that had both, the weaker of the two engagements
    (view or click 1, add to cart 3, purchase 5): two products bought together outweigh two
    merely looked at.
    """

    product = models.ForeignKey(
        "catalog.Product", on_delete=models.CASCADE, related_name="coengaged"
    )
    partner = models.ForeignKey("catalog.Product", on_delete=models.CASCADE, related_name="+")
    weight = models.FloatField()
    sessions = models.PositiveIntegerField()
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["product", "partner"], name="search_coengagement_pair")
        ]
        indexes = [models.Index(fields=["product", "-weight"], name="search_coeng_product_w")]

    def __str__(self) -> str:
        return f"{self.product_id} ~ {self.partner_id} ({self.weight:g})"
