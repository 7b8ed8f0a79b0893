"""The cache (and so every API throttle count) is shared by all processes of a deployment.

Real components throughout: the test stack's Redis, other Python processes on the same
settings, a Redis of our own that we stop, and a server that accepts and never answers.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.test import Client

from search.services import api_key_create
from search.throttling import ApiClientRateThrottle
from tests.support.processes import BASE_DIR, subprocess_environment
from webapp import embedded
from webapp.env import redis_cache_url_beside

PYTHON = sys.executable
REDIS_CACHE = "django.core.cache.backends.redis.RedisCache"
# Variables the test stack sets for local http serving (a production check must not see them).
LOCAL_OVERRIDES = ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
                   "SECURE_HSTS_SECONDS", "DJANGO_ALLOW_ASYNC_UNSAFE")  # fmt: skip
# Statuses of `count` API calls with one key, made by a separate Python process.
STATUSES_FROM_ANOTHER_PROCESS = """
import django, json, sys
django.setup()
from django.test import Client
client = Client(HTTP_HOST="localhost", headers={"Authorization": "Api-Key " + sys.argv[1]})
print(json.dumps([client.get("/api/v1/products/").status_code for _ in range(int(sys.argv[2]))]))
"""


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


def _python(code: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = subprocess_environment(DJANGO_SETTINGS_MODULE="webapp.settings", **env)
    return subprocess.run(
        [PYTHON, "-c", code, *args], cwd=BASE_DIR, env=environment, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


def _statuses_from_another_process(key: str, count: int) -> list[int]:
    result = _python(STATUSES_FROM_ANOTHER_PROCESS, key, str(count))
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


def _statuses_here(key: str, count: int) -> list[int]:
    client = Client(headers={"Authorization": f"Api-Key {key}"})
    return [client.get("/api/v1/products/").status_code for _ in range(count)]


def _broker_redis() -> redis.Redis:
    """A plain client on the test stack's broker database (kombu's URL in redis-py's form)."""
    url = settings.CELERY_BROKER_URL
    return redis.Redis.from_url(url.replace("redis+socket://", "unix://", 1))


def test_the_test_stack_caches_in_redis_on_a_database_apart_from_the_broker() -> None:
    assert settings.CACHES["default"]["BACKEND"] == REDIS_CACHE
    if os.environ.get("CACHE_URL"):
        pytest.skip("CACHE_URL is set for this run; the default beside the broker is not used")
    broker_socket = settings.CELERY_BROKER_URL.removeprefix("redis+socket://")
    assert settings.CACHES["default"]["LOCATION"] == f"unix://{broker_socket}?db=1"

    broker = _broker_redis()
    broker.set("vitrine-test-queue-sentinel", "kept")
    try:
        cache.set("cached-value", 42)
        assert cache.get("cached-value") == 42
        assert broker.exists("cached-value") == 0  # another database, not the broker's
        cache.clear()  # what the search tests do around every test: FLUSHDB of the cache's
        assert cache.get("cached-value") is None
        assert broker.get("vitrine-test-queue-sentinel") == b"kept"  # queues are untouched
    finally:
        broker.delete("vitrine-test-queue-sentinel")


def test_a_value_cached_by_one_process_is_read_by_another() -> None:
    cache.set("written-here", {"count": 3})

    result = _python(
        "import django\n"
        "django.setup()\n"
        "from django.core.cache import cache\n"
        "print(cache.get('written-here'))\n"
        "cache.set('written-there', 7)\n"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "{'count': 3}"
    assert cache.get("written-there") == 7


@pytest.mark.django_db(transaction=True)  # the other process must see the key's row
def test_a_per_key_rate_of_five_a_minute_allows_exactly_five_calls_across_two_processes() -> None:
    key = api_key_create(name="storefront", rate="5/min").plaintext

    here = _statuses_here(key, 3)
    there = _statuses_from_another_process(key, 4)
    here_again = _statuses_here(key, 1)

    assert here == [200, 200, 200]
    assert there == [200, 200, 429, 429]  # it counted the three calls made here
    assert here_again == [429]  # and this process counted the two made there
    assert (here + there + here_again).count(200) == 5


@pytest.mark.django_db(transaction=True)
def test_concurrent_calls_with_one_key_never_overshoot_the_limit() -> None:
    # 24 calls released together (a burst from a storefront's servers): a throttle that
    # reads the history and then writes it back lets several through on the same count.
    key = api_key_create(name="storefront", rate="5/min").plaintext
    start = threading.Barrier(24)

    def call(_: int) -> tuple[int, str | None]:
        try:
            client = Client(headers={"Authorization": f"Api-Key {key}"})
            start.wait()
            response = client.get("/api/v1/products/")
            return response.status_code, response.headers.get("Retry-After")
        finally:
            connection.close()  # each thread's own database connection

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(call, range(24)))

    statuses = [status for status, _ in results]
    assert statuses.count(200) == 5 and statuses.count(429) == 19
    waits = [int(wait) for status, wait in results if status == 429 and wait is not None]
    assert len(waits) == 19 and all(1 <= wait <= 60 for wait in waits)


@pytest.mark.django_db(transaction=True)
def test_the_window_slides_calls_are_allowed_again_once_the_oldest_leaves_it() -> None:
    key = api_key_create(name="storefront", rate="2/s").plaintext
    client = Client(headers={"Authorization": f"Api-Key {key}"})

    first = [client.get("/api/v1/products/") for _ in range(3)]
    assert [r.status_code for r in first] == [200, 200, 429]
    assert first[2].headers["Retry-After"] == "1"
    time.sleep(1.1)

    assert [client.get("/api/v1/products/").status_code for _ in range(3)] == [200, 200, 429]


@pytest.mark.django_db(transaction=True)
def test_each_process_throttles_the_same_key_once_another_used_it_up() -> None:
    key = api_key_create(name="storefront", rate="2/min").plaintext

    assert _statuses_from_another_process(key, 3) == [200, 200, 429]
    assert _statuses_from_another_process(key, 1) == [429]  # a fresh process: no reset
    assert _statuses_here(key, 1) == [429]


def test_with_an_amqp_broker_and_no_cache_url_the_cache_is_per_process_and_deploy_check_warns() -> (
    None
):
    env = {k: v for k, v in os.environ.items() if k not in (*LOCAL_OVERRIDES, "CACHE_URL")}
    env.update(
        DEBUG="0", SECRET_KEY=secrets.token_urlsafe(64), ALLOWED_HOSTS="shop.example.com",
        CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//",
    )  # fmt: skip

    resolved = subprocess.run(
        [PYTHON, "manage.py", "shell", "--no-imports", "-c",
         "from django.conf import settings; print(settings.CACHES['default']['BACKEND'])"],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    check = subprocess.run(
        [PYTHON, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert resolved.returncode == 0, resolved.stderr
    assert resolved.stdout.strip() == "django.core.cache.backends.locmem.LocMemCache"
    assert check.returncode != 0
    output = check.stdout + check.stderr
    assert "(vitrine.W001) The cache is per-process (LocMemCache)" in output
    assert "every rate limit is multiplied by the number of web processes" in output
    assert "Set CACHE_URL" in output
    assert "System check identified 1 issue" in output  # nothing else to warn about


def test_an_amqp_broker_with_a_cache_url_passes_the_deploy_check() -> None:
    env = {k: v for k, v in os.environ.items() if k not in LOCAL_OVERRIDES}
    env.update(
        DEBUG="0", SECRET_KEY=secrets.token_urlsafe(64), ALLOWED_HOSTS="shop.example.com",
        CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//",
        CACHE_URL="redis://:s3cret@cache.internal:6379/2",
    )  # fmt: skip

    check = subprocess.run(
        [PYTHON, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("memcached://:s3cret@cache:11211", "CACHE_URL must be a redis://, rediss:// or unix://"),
        ("redis://:s3cret@cache:port/1", "CACHE_URL is not a valid Redis URL"),
    ],
)
def test_a_bad_cache_url_stops_start_up_without_echoing_its_password(
    value: str, message: str
) -> None:
    result = subprocess.run(
        [PYTHON, "manage.py", "check"], cwd=BASE_DIR, env={**os.environ, "CACHE_URL": value},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr
    assert "s3cret" not in result.stderr


def test_the_stack_hands_a_given_cache_url_to_commands_run_beside_it(tmp_path: Path) -> None:
    cache_url = settings.CACHES["default"]["LOCATION"].replace("db=1", "db=7")
    env = {**os.environ, "VITRINE_DATA_DIR": str(tmp_path), "CACHE_URL": cache_url}
    show = "from django.conf import settings; print(settings.CACHES['default']['LOCATION'])"
    beside = ["env", "-u", "CACHE_URL", PYTHON, "manage.py", "shell", "--no-imports", "-c", show]

    result = subprocess.run(
        [PYTHON, "-m", "webapp.stack", "exec", "--", *beside], cwd=BASE_DIR, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-2:] == ["[vitrine] cache: CACHE_URL", cache_url]


@pytest.mark.parametrize(
    ("broker", "result_backend", "cache_url"),
    [
        ("redis+socket:///run/vitrine/redis.sock", None, "unix:///run/vitrine/redis.sock?db=1"),
        ("redis://redis.internal:6379/0", None, "redis://redis.internal:6379/1"),
        ("redis://redis.internal", None, "redis://redis.internal/1"),
        ("redis://:pw@redis.internal:6379/3", "redis://:pw@redis.internal:6379/4",
         "redis://:pw@redis.internal:6379/5"),
        ("rediss://redis.internal:6380/15?ssl_cert_reqs=required", None,
         "rediss://redis.internal:6380/0?ssl_cert_reqs=required"),
        ("redis://a:6379/0;redis://b:6379/0", None, "redis://a:6379/1"),  # Celery failover list
        ("amqp://guest:guest@rabbit//", None, None),
    ],
)  # fmt: skip
def test_the_default_cache_url_is_another_database_of_the_brokers_redis(
    broker: str, result_backend: str | None, cache_url: str | None
) -> None:
    assert redis_cache_url_beside(broker, taken=[result_backend]) == cache_url


class CacheRedis:
    """A real Redis of a test's own, serving as the cache, that the test stops and restarts."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket_path = directory / "redis.sock"
        self.server: embedded.EmbeddedRedis | None = None

    def start(self) -> None:
        self.server = embedded.start_redis(self.directory / "redis", self.socket_path)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def cache_redis(tmp_path: Path, settings: Any) -> Iterator[CacheRedis]:
    server = CacheRedis(tmp_path)
    server.start()
    stack_caches = settings.CACHES
    location = f"unix://{server.socket_path}?db=1"
    settings.CACHES = {"default": {**stack_caches["default"], "LOCATION": location}}
    yield server
    settings.CACHES = stack_caches  # before the stack's cache is cleared after the test
    server.stop()


@pytest.fixture
def hung_cache(settings: Any) -> Iterator[None]:
    """A cache URL whose server accepts connections and never answers (a hung Redis)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)  # connections complete in the kernel's backlog; none is read
        port = listener.getsockname()[1]
        stack_caches = settings.CACHES
        location = f"redis://127.0.0.1:{port}/1"
        settings.CACHES = {"default": {**stack_caches["default"], "LOCATION": location}}
        yield
        settings.CACHES = stack_caches


@pytest.fixture
def fresh_retry_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """The throttle's "cache is down" moment is per process: start from none, restore after."""
    monkeypatch.setattr(ApiClientRateThrottle, "_cache_down_until", 0.0)


@pytest.mark.django_db
@pytest.mark.usefixtures("fresh_retry_state")
def test_api_calls_go_through_unthrottled_while_the_cache_is_down_and_are_counted_after(
    cache_redis: CacheRedis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ApiClientRateThrottle, "cache_retry_seconds", 0.5)
    key = api_key_create(name="storefront", rate="2/min").plaintext
    before = _statuses_here(key, 3)

    cache_redis.stop()
    while_down = _statuses_here(key, 3)
    cache_redis.start()
    time.sleep(0.6)  # past the retry delay
    after = _statuses_here(key, 1)

    assert before == [200, 200, 429]
    assert while_down == [200, 200, 200]  # neither 500 nor 429
    assert "Throttle counts are unavailable (ConnectionError" in caplog.text
    assert after == [429]  # the two counted calls survived the restart (append-only file)


@pytest.mark.django_db
@pytest.mark.usefixtures("fresh_retry_state", "hung_cache")
def test_a_hung_cache_costs_one_short_timeout_then_is_left_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = api_key_create(name="storefront", rate="1/min").plaintext

    started = time.monotonic()
    first = _statuses_here(key, 1)
    first_took = time.monotonic() - started
    started = time.monotonic()
    second = _statuses_here(key, 1)
    second_took = time.monotonic() - started

    assert first == second == [200]
    assert "Throttle counts are unavailable (TimeoutError" in caplog.text
    assert 0.9 < first_took < 4.0  # the 1 s socket timeout, not redis-py's 5 s default
    assert second_took < 0.9  # within the retry delay the cache is not asked again
