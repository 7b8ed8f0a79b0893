"""Django settings for Vitrine, read from the environment.

Every variable is optional for a local run; production sets at least SECRET_KEY,
ALLOWED_HOSTS and DEBUG=0 (then `manage.py check --deploy` passes with no warnings).
When DATABASE_URL / CELERY_BROKER_URL are unset, the embedded services started by
`python -m webapp.stack` are used (see docs/architecture.md); when CACHE_URL is unset, the
cache takes another database of the broker's Redis. One module over 400 lines, as Django
expects: every setting and the checked environment variable behind it.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from webapp.embedded import read_services_file
from webapp.env import (
    env_bool,
    env_int,
    env_list,
    env_optional,
    env_path,
    env_redis_url,
    env_str,
    redis_cache_url_beside,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = env_path("VITRINE_DATA_DIR", BASE_DIR / ".data")

# Explicit variables win; otherwise use what a running `webapp.stack` recorded, so that
# `manage.py <command>` beside a running stack talks to its services with its key.
_running_stack = read_services_file(DATA_DIR)

DEBUG = env_bool("DEBUG", default=False)
if not env_optional("SECRET_KEY") and _running_stack.get("SECRET_KEY"):
    SECRET_KEY = _running_stack["SECRET_KEY"]
elif DEBUG:
    # A development key is fine only while DEBUG is on; production must set its own.
    SECRET_KEY = env_str("SECRET_KEY", "django-insecure-local-development-only-key")
else:
    SECRET_KEY = env_str("SECRET_KEY")
    if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
        raise ImproperlyConfigured("SECRET_KEY must be at least 50 random characters.")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from our static files: /api/docs/ works offline
    "corsheaders",
    "django_htmx",
    "catalog",
    "embeddings",
    "search",
    "search.looks",  # shop the look (app label "looks")
    "search.posts",  # shoppable posts (app label "posts")
    "webapp",  # system checks only (webapp/checks.py)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    # Before anything reads the body: an oversized upload is refused from its headers.
    "webapp.middleware.RequestBodyLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "webapp.replicas.ReplicaReadsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # A/B tests: the widget's session picks the model version and ranking of its arm.
    "search.experiments.context.ExperimentArmMiddleware",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"
ASGI_APPLICATION = "webapp.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Services -----------------------------------------------------------------------------
DATABASE_URL = env_optional("DATABASE_URL") or _running_stack.get("DATABASE_URL")
if not DATABASE_URL:
    raise ImproperlyConfigured(
        "No database configured: set DATABASE_URL (PostgreSQL with the pgvector extension), "
        "or start the embedded stack with `make run` "
        "(or run a command inside it: `python -m webapp.stack exec -- <command>`)."
    )
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
except ValueError as error:
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {error}") from None
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured("DATABASE_URL must point to PostgreSQL (postgres://...).")
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Streaming replicas of that database (comma-separated URLs): the storefront's read-only
# requests are served from them, everything else from the primary (webapp/replicas.py).
DATABASE_REPLICAS: list[str] = []
for _number, _replica_url in enumerate(env_list("DATABASE_REPLICA_URLS", []), start=1):
    try:
        _replica = dj_database_url.parse(_replica_url, conn_max_age=60)
    except ValueError as error:
        raise ImproperlyConfigured(
            f"DATABASE_REPLICA_URLS entry {_number} is not a valid database URL: {error}"
        ) from None
    if _replica["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured("DATABASE_REPLICA_URLS must point to PostgreSQL servers.")
    # Under tests a replica alias is the test database itself (Django's test mirror).
    DATABASES[f"replica{_number}"] = {
        **_replica,
        "CONN_HEALTH_CHECKS": True,
        "TEST": {"MIRROR": "default"},
    }
    DATABASE_REPLICAS.append(f"replica{_number}")
DATABASE_ROUTERS = ["webapp.replicas.ReplicaRouter"]
# GET/HEAD requests under these paths read from a replica (when any is configured); the
# shopper's own just-uploaded photo is read back from the primary.
VITRINE_REPLICA_READ_PATHS = (
    "/search/",
    "/products/",
    "/lookbooks/",
    "/api/v1/search/",
    "/api/v1/products",
    "/api/v1/lookbooks",
)
VITRINE_REPLICA_EXCLUDED_PATHS = ("/search/photos/",)

CELERY_BROKER_URL = env_optional("CELERY_BROKER_URL") or _running_stack.get("CELERY_BROKER_URL")
if not CELERY_BROKER_URL:
    raise ImproperlyConfigured(
        "No broker configured: set CELERY_BROKER_URL (redis:// or amqp://), "
        "or start the embedded stack with `make run`."
    )
if not CELERY_BROKER_URL.startswith(("redis://", "rediss://", "redis+socket://", "amqp://")):
    raise ImproperlyConfigured(
        f"CELERY_BROKER_URL={CELERY_BROKER_URL!r} is not a redis:// or amqp:// URL."
    )
# Results are small (ids and counts); keep them beside the broker when it is Redis.
CELERY_RESULT_BACKEND = env_optional("CELERY_RESULT_BACKEND") or (
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis", "rediss")) else None
)
CELERY_TASK_ACKS_LATE = True  # a task is acknowledged only once it finished
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # a killed worker's task goes back to the queue
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "catalog.tasks.*": {"queue": "ingest"},
    # Fine-tuning and evaluation take minutes to hours: a worker of their own (stack.py)
    # so imports and embedding never wait behind them.
    "embeddings.tasks.embedding_model_evaluate_task": {"queue": "training"},
    "embeddings.tasks.training_job_run_task": {"queue": "training"},
    "embeddings.tasks.*": {"queue": "embeddings"},
    # Shoppable posts: tagging encodes the photo (where the model is loaded); feeds fetch.
    "search.posts.tasks.post_prepare_task": {"queue": "embeddings"},
    "search.posts.tasks.post_feed_process_task": {"queue": "ingest"},
}
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "run" / "celerybeat-schedule")
# The whole beat schedule, every app's periodic work in one place.
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    # catalog: re-queue import work whose worker died (it only re-queues work older than
    # its threshold, catalog.services.chunks.STALE_AFTER_SECONDS).
    "catalog-import-sweep": {"task": "catalog.tasks.import_sweep_task", "schedule": 60.0},
    # embeddings (owner: embedding engine): queue products missing current vectors for the
    # maintained (active, ready, building) model versions; on a fresh install, register the
    # bundled default model.
    # On the default queue so it never waits behind the embedding batches it schedules.
    "embeddings-sweep": {
        "task": "embeddings.tasks.embeddings_sweep_task",
        "schedule": 15.0,
        "options": {"queue": "default", "expires": 60},
    },
    # embeddings: re-queue fine-tuning jobs whose training worker died (no heartbeat).
    "training-jobs-recover": {
        "task": "embeddings.tasks.training_jobs_recover_task",
        "schedule": 60.0,
        "options": {"queue": "default", "expires": 60},
    },
    # posts: send again the tasks of post feeds and posts that were lost (a broker restarted
    # empty, a worker killed); only work idle for search.posts.services.FEED_STALE_SECONDS.
    "posts-sweep": {"task": "search.posts.tasks.posts_sweep_task", "schedule": 60.0},
    # search: delete shoppers' query photos once past VITRINE_QUERY_PHOTO_RETENTION_HOURS.
    "search-query-photos-purge": {
        "task": "search.tasks.query_photos_purge_task",
        "schedule": 900.0,
    },
    # search: recompute "often bought together" pairs from the shoppers' sessions.
    "search-coengagement-refresh": {
        "task": "search.tasks.coengagement_refresh_task",
        "schedule": 3600.0,
    },
    # search: create the coming months' event partitions, drop those past retention.
    "search-event-partitions": {
        "task": "search.tasks.event_partitions_maintain_task",
        "schedule": 6 * 3600.0,
    },
    # search: rebuild query understanding's vocabulary when the catalog changed, and fit
    # the active version's ranking weights and "no good match" thresholds when it has none
    # or the catalog moved by 10% (search/calibration.py).
    "search-vocabulary-refresh": {"task": "search.tasks.vocabulary_refresh_task", "schedule": 60.0},
    "search-calibration-refresh": {
        "task": "search.tasks.search_calibration_refresh_task",
        "schedule": 600.0,
        "options": {"expires": 600},
    },
    # looks: encode the lookbook cover photos that have no vector by the active version
    # (shop the look finds the lookbooks a scene photo looks like by them).
    "looks-cover-vectors": {
        "task": "search.looks.tasks.lookbook_cover_vectors_refresh_task",
        "schedule": 60.0,
        "options": {"queue": "embeddings", "expires": 120},
    },
}

# Django's cache holds the API's throttle counts (search/throttling.py), so every web process
# must share it: a per-process cache multiplies each rate limit by the number of processes.
# Unset, CACHE_URL is the broker's Redis on another database number (never the broker's own:
# `cache.clear()` flushes the whole database). A non-Redis broker and no CACHE_URL leave a
# per-process cache, which `check --deploy` reports (webapp/checks.py).
CACHE_URL = (
    env_redis_url("CACHE_URL")
    or _running_stack.get("CACHE_URL")
    or redis_cache_url_beside(CELERY_BROKER_URL, taken=[CELERY_RESULT_BACKEND])
)
if CACHE_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            "OPTIONS": {
                # A cache that has not answered in a second is down: the throttle then lets
                # requests through (search/throttling.py) instead of holding each one 5 s.
                "socket_connect_timeout": 1.0,
                "socket_timeout": 1.0,
                # Pooled connections go stale when Redis restarts: reconnect once at once.
                "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Storage ------------------------------------------------------------------------------
MEDIA_ROOT = env_path("MEDIA_ROOT", DATA_DIR / "media")
MEDIA_URL = env_str("MEDIA_URL", "/media/")
STATIC_URL = "static/"
STATIC_ROOT = env_path("STATIC_ROOT", DATA_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
# Vitrine serves its own uploaded product images (the local stack has no separate web server).
SERVE_MEDIA = env_bool("VITRINE_SERVE_MEDIA", default=True)
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("VITRINE_MAX_UPLOAD_BYTES", 20 * 1024 * 1024, minimum=1)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- API (owner: search + API) ------------------------------------------------------------
# Who may call /api/v1/: server-to-server clients with an API key (`Authorization: Api-Key
# <key>`, see `manage.py api_keys`), staff with a session; anonymous shoppers may search
# (read only) when VITRINE_ANONYMOUS_SEARCH is on, so public pages can call the API.
VITRINE_ANONYMOUS_SEARCH = env_bool("VITRINE_ANONYMOUS_SEARCH", default=False)
# Addresses or networks of the reverse proxies in front of the web server: only requests
# from them have their X-Forwarded-For read (search.limits.client_address).
VITRINE_TRUSTED_PROXIES = env_list("VITRINE_TRUSTED_PROXIES", [])
# Shows /healthz's details to a caller sending "Authorization: Bearer <token>" (staff and
# clients on this machine see them anyway).
VITRINE_HEALTH_TOKEN = env_str("VITRINE_HEALTH_TOKEN", "")
for _proxy in VITRINE_TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"VITRINE_TRUSTED_PROXIES: {_proxy!r} is not an IP address or network"
        ) from None
# Per client, on the shopper pages: photo uploads, and result / similar-item pages.
VITRINE_PAGE_PHOTO_RATE = env_str("VITRINE_PAGE_PHOTO_RATE", "30/min")
VITRINE_PAGE_SEARCH_RATE = env_str("VITRINE_PAGE_SEARCH_RATE", "240/min")
# Threads of one web process that may encode a shopper's photo at once (one per client).
VITRINE_PHOTO_ENCODE_CONCURRENCY = env_int("VITRINE_PHOTO_ENCODE_CONCURRENCY", 2, minimum=1)
# Seconds a results page's ranking stays in the cache for the same search (0: off). A
# change of the catalog, its vectors or the model answering retires it sooner
# (search/result_cache.py); the bound is for memory, not for freshness.
VITRINE_RESULTS_CACHE_SECONDS = env_int("VITRINE_RESULTS_CACHE_SECONDS", 300, minimum=0)
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "search.auth.ApiKeyAuthentication",
        "search.storefront.auth.PublishableKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["search.permissions.HasApiAccess"],
    "DEFAULT_THROTTLE_CLASSES": ["search.throttling.ApiClientRateThrottle"],
    "DEFAULT_PARSER_CLASSES": [
        "webapp.api.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_THROTTLE_RATES": {
        # Per API key (a key's own `rate` overrides it), per staff user, per anonymous IP.
        "api_key": env_str("VITRINE_API_KEY_RATE", "6000/min"),
        "user": env_str("VITRINE_API_USER_RATE", "600/min"),
        "anon": env_str("VITRINE_API_ANON_RATE", "60/min"),
        # Per shopper address and publishable key (the brand's web pages, search widgets).
        "publishable": env_str("VITRINE_PUBLISHABLE_KEY_RATE", "300/min"),
    },
    "EXCEPTION_HANDLER": "search.api.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "TITLE": "Vitrine API",
    "DESCRIPTION": (
        "Visual search, similar items and 'complete the look' for a retail catalog. "
        "Authenticate with `Authorization: Api-Key <key>`; errors always have the body "
        '`{"error": {"code", "message", "details"}}`.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,  # separate read and write shapes, so generated clients work
    "ENUM_NAME_OVERRIDES": {"ApiKeyScopeEnum": "search.models.ApiKey.Scope"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "search.serializers.sparse_fieldsets_schema",
    ],
}
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", [])
CORS_URLS_REGEX = r"^/api/.*$"
CORS_ALLOW_HEADERS = ("accept", "authorization", "content-type", "x-csrftoken")
# The widgets back off on a 429 (search/events): their scripts must be able to read it.
CORS_EXPOSE_HEADERS = ["Retry-After"]
# Search quality and cost knobs (see search/selectors.py for what each one trades).
VITRINE_HNSW_EF_SEARCH = env_int("VITRINE_HNSW_EF_SEARCH", 100, minimum=1)


# "No good match" has no fixed floor: it is calibrated per model version and catalog
# (search.models.SearchCalibration, search/calibration.py). The former floors are refused
# so that a deployment still setting them learns that they no longer do anything.
for _retired in ("VITRINE_SEARCH_MIN_SCORE_IMAGE", "VITRINE_SEARCH_MIN_SCORE_TEXT"):
    if env_str(_retired, ""):
        raise ImproperlyConfigured(
            f"{_retired} is gone: 'no good match' is calibrated per model version and catalog "
            "(manage.py search_calibrate). Unset it."
        )
# Query photos: upload limits and how long shoppers' photos are kept.
VITRINE_QUERY_IMAGE_MAX_BYTES = env_int(
    "VITRINE_QUERY_IMAGE_MAX_BYTES", 10 * 1024 * 1024, minimum=1
)
VITRINE_QUERY_IMAGE_MAX_PIXELS = env_int("VITRINE_QUERY_IMAGE_MAX_PIXELS", 40_000_000, minimum=1)
VITRINE_QUERY_PHOTO_RETENTION_HOURS = env_int("VITRINE_QUERY_PHOTO_RETENTION_HOURS", 24, minimum=0)
# Shopper events (search/events): deployment-wide admission per second (beyond it: 429 with
# Retry-After) and whole months of events kept.
VITRINE_EVENTS_MAX_PER_SECOND = env_int("VITRINE_EVENTS_MAX_PER_SECOND", 4000, minimum=500)
VITRINE_EVENT_RETENTION_MONTHS = env_int("VITRINE_EVENT_RETENTION_MONTHS", 13, minimum=1)
# "Often bought together": the days of events it is computed from, and the fewest sessions
# a pair needs (one shopper's whim is not a pattern).
VITRINE_COENGAGEMENT_DAYS = env_int("VITRINE_COENGAGEMENT_DAYS", 90, minimum=1)
VITRINE_COENGAGEMENT_MIN_SESSIONS = env_int("VITRINE_COENGAGEMENT_MIN_SESSIONS", 2, minimum=1)
# --- end API ------------------------------------------------------------------------------

# --- Vitrine ------------------------------------------------------------------------------
# Hosts the image fetcher may reach even though they resolve to non-public addresses.
# Empty by default: loopback and private networks are refused. Tests name their own hosts.
VITRINE_FETCH_ALLOWED_HOSTS = env_list("VITRINE_FETCH_ALLOWED_HOSTS", [])
# One image download may take this long in all (every redirect hop included) and this many bytes.
VITRINE_FETCH_DEADLINE_SECONDS = env_int("VITRINE_FETCH_DEADLINE_SECONDS", 20, minimum=1)
VITRINE_FETCH_MAX_IMAGE_BYTES = env_int(
    "VITRINE_FETCH_MAX_IMAGE_BYTES", 20 * 1024 * 1024, minimum=1
)
# Threads that fetch and normalise one import chunk's images (0: up to 4, by CPU count).
VITRINE_IMPORT_IMAGE_THREADS = env_int("VITRINE_IMPORT_IMAGE_THREADS", 0, minimum=0)
# Where the shared datasets live for dataset-backed tests and benchmarks (never committed).
# Product attributes whose shared values join products in the fine-tuning graph (e.g.
# "collection,style"): the retailer's own notion of "belongs together".
VITRINE_GRAPH_ATTRIBUTES = env_list("VITRINE_GRAPH_ATTRIBUTES", [])
VITRINE_DATASETS = env_path("VITRINE_DATASETS", BASE_DIR.parent / "shared" / "datasets")

# --- Production hardening (all on unless DEBUG; each can be relaxed behind a proxy) -------
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Scripts only from our own files (htmx, vitrine.js, Swagger UI's split init script): an
# injected <script> or on*= attribute does not run. Inline *styles* stay allowed because
# htmx adds its indicator <style> and the admin and Swagger UI set style attributes; a
# style cannot run code. Media may live on another origin (MEDIA_URL on a CDN).
_MEDIA_ORIGIN = [MEDIA_URL] if MEDIA_URL.startswith(("https://", "http://")) else []
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF, CSP.UNSAFE_INLINE],
    # blob: is the photo-search preview of the shopper's own file; data: Swagger UI's icons.
    "img-src": [CSP.SELF, "data:", "blob:", *_MEDIA_ORIGIN],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}
if env_bool("VITRINE_BEHIND_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(
        f"LOG_LEVEL={LOG_LEVEL!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL"
    )
# `python -m webapp.stack run` also writes each process's output to a rotating file here.
LOG_DIR = env_path("VITRINE_LOG_DIR", DATA_DIR / "logs")
_REQUEST_LOG_FILTERS = ["skip_static", "client_errors_as_info"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {
        "skip_static": {"()": "webapp.log_filters.SkipStaticRequests"},
        "client_errors_as_info": {"()": "webapp.log_filters.ClientErrorsAsInfo"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Configuring gunicorn's access logger replaces its own handler: its lines then go
        # through the root's, filtered and in the same format as the rest.
        "gunicorn.access": {"filters": ["skip_static"], "propagate": True},
        "django.server": {"filters": _REQUEST_LOG_FILTERS, "propagate": True},
        "django.request": {"filters": ["client_errors_as_info"]},
    },
}
