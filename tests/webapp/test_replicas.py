"""Read replicas: the storefront's reads come from a real streaming replica, writes go to
the primary, and the admin and imports never read a replica.

A live server runs with `DATABASE_REPLICA_URLS` naming a hot standby cloned from the test
database's server (`pg_basebackup`). Replay on the standby is paused, so a row written
since is on the primary only: whether a request sees it tells which server answered.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from django.conf import settings
from django.contrib.auth.models import User

from catalog.models import Product
from search.models import ApiKey
from search.services import api_key_create
from tests.support import processes
from tests.support.processes import BASE_DIR, subprocess_environment
from webapp import embedded

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def replica(transactional_db: Any) -> Iterator[embedded.EmbeddedReplica]:
    # Not under pytest's tmp_path: pytest makes its root private (0700) again whenever a
    # session starts, and the server runs as another user that must reach its directory.
    directory = Path(tempfile.mkdtemp(prefix="vitrine-replica-"))
    standby = embedded.start_postgres_replica(os.environ["DATABASE_URL"], directory / "data")
    yield standby
    standby.stop()
    shutil.rmtree(directory, ignore_errors=True)


def _replica_database_url(replica: embedded.EmbeddedReplica) -> str:
    return replica.url(settings.DATABASES["default"]["NAME"])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server_with_replica(replica: embedded.EmbeddedReplica) -> Iterator[str]:
    port = _free_port()
    environment = subprocess_environment(
        DATABASE_REPLICA_URLS=_replica_database_url(replica),
        DEBUG="1",  # static files without a collectstatic manifest
        ALLOWED_HOSTS="127.0.0.1",
    )
    process = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "webapp.wsgi", "--bind", f"127.0.0.1:{port}",
            "--workers", "1", "--threads", "2", "--log-level", "warning",
        ],
        cwd=BASE_DIR, env=environment, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}")
        try:
            httpx.get(url + "/healthz", timeout=2)
            break
        except httpx.TransportError:
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(30)


def _wait_until_replayed(replica: embedded.EmbeddedReplica) -> None:
    """Block until the standby has replayed everything the primary has written so far."""
    with psycopg.connect(processes.test_database_url(), autocommit=True) as primary:
        target = primary.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
    with psycopg.connect(_replica_database_url(replica), autocommit=True) as standby:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            behind = standby.execute(
                "SELECT pg_wal_lsn_diff(%s, pg_last_wal_replay_lsn()) > 0", [target]
            ).fetchone()[0]  # type: ignore[index]
            if not behind:
                return
            time.sleep(0.05)
    raise AssertionError("the replica did not catch up in 30 s")


def _set_replay(replica: embedded.EmbeddedReplica, *, paused: bool) -> None:
    with psycopg.connect(_replica_database_url(replica), autocommit=True) as standby:
        standby.execute(f"SELECT pg_wal_replay_{'pause' if paused else 'resume'}()")


def _api_skus(url: str, key: str) -> set[str]:
    response = httpx.get(
        url + "/api/v1/products/?page_size=100",
        headers={"Authorization": f"Api-Key {key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return {product["sku"] for product in response.json()["results"]}


def test_storefront_reads_come_from_the_replica_and_writes_reach_the_primary(
    replica: embedded.EmbeddedReplica, server_with_replica: str
) -> None:
    url = server_with_replica
    key = api_key_create(name="pim", scope=ApiKey.Scope.READ_WRITE).plaintext
    Product.objects.create(sku="BEFORE", title="Replicated shirt", content_hash="0" * 64)
    _wait_until_replayed(replica)
    assert _api_skus(url, key) == {"BEFORE"}

    _set_replay(replica, paused=True)
    created = httpx.post(
        url + "/api/v1/products/",
        json={"sku": "AFTER", "title": "Shirt written while replay is paused"},
        headers={"Authorization": f"Api-Key {key}"},
        timeout=30,
    )
    # A write sent to the standby would fail ("read-only transaction"): it went to the primary.
    assert created.status_code == 201, created.text
    assert Product.objects.filter(sku="AFTER").exists()

    # The storefront's read does not see it yet: it was answered by the paused replica.
    assert _api_skus(url, key) == {"BEFORE"}
    shopper_page = httpx.get(url + "/products/AFTER/", timeout=30)
    assert shopper_page.status_code == 404

    _set_replay(replica, paused=False)
    _wait_until_replayed(replica)
    assert _api_skus(url, key) == {"BEFORE", "AFTER"}
    assert httpx.get(url + "/products/AFTER/", timeout=30).status_code == 200


def test_the_admin_reads_the_primary_while_the_replica_lags(
    replica: embedded.EmbeddedReplica, server_with_replica: str
) -> None:
    User.objects.create_superuser("merch", "merch@example.com", "a-long-password-1")
    _wait_until_replayed(replica)
    _set_replay(replica, paused=True)
    product = Product.objects.create(sku="FRESH", title="Just imported", content_hash="1" * 64)

    with httpx.Client(base_url=server_with_replica, timeout=30) as browser:
        login_page = browser.get("/admin/login/")
        browser.post(
            "/admin/login/",
            data={
                "username": "merch",
                "password": "a-long-password-1",
                "csrfmiddlewaretoken": login_page.cookies["csrftoken"],
                "next": "/admin/",
            },
            headers={"Referer": f"{server_with_replica}/admin/login/"},
        )
        change_page = browser.get(f"/admin/catalog/product/{product.pk}/change/")
    assert change_page.status_code == 200
    assert "Just imported" in change_page.text
    _set_replay(replica, paused=False)


def test_replica_urls_must_name_postgresql() -> None:
    environment = {**os.environ, "DATABASE_REPLICA_URLS": "mysql://db/vitrine"}
    checked = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=BASE_DIR,
        env={**environment, "DJANGO_SETTINGS_MODULE": "webapp.settings"},
        capture_output=True,
        text=True,
    )
    assert checked.returncode != 0
    assert "DATABASE_REPLICA_URLS must point to PostgreSQL" in checked.stderr
