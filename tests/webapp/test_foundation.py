"""The skeleton every feature stands on: settings, health, embedded services, the stack."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import psycopg
import pytest
from django.contrib.auth.models import User
from django.test import Client

from catalog.models import ImportJob, Lookbook, LookbookItem, Product, ProductImage
from tests.support.processes import BASE_DIR, WorkerProcess, subprocess_environment
from webapp import embedded

PYTHON = sys.executable
# Variables the test stack sets for local http serving, and the one the browser tests set for
# Playwright's event loop; a production check must not see them.
LOCAL_OVERRIDES = ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
                   "SECURE_HSTS_SECONDS", "DJANGO_ALLOW_ASYNC_UNSAFE")  # fmt: skip


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**subprocess_environment(), **env}
    return subprocess.run(
        [PYTHON, "-c", code], cwd=BASE_DIR, env=environment, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


@pytest.mark.django_db
def test_web_app_and_celery_load_without_importing_torch() -> None:
    result = _run_python(
        "import sys, django\n"
        "django.setup()\n"
        "from django.urls import get_resolver\n"
        "from django.test import Client\n"
        "get_resolver().url_patterns\n"
        "from webapp.wsgi import application\n"
        "from webapp.celery import app\n"
        "app.loader.import_default_modules()\n"
        "assert Client(HTTP_HOST='localhost').get('/healthz').status_code in (200, 503)\n"
        "heavy = sorted(m for m in ('torch', 'open_clip', 'torchvision', 'transformers')"
        " if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n",
        DJANGO_SETTINGS_MODULE="webapp.settings",
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stdout


@pytest.mark.django_db(transaction=True)
def test_healthz_reports_database_pgvector_broker_and_worker(
    celery_worker_process: WorkerProcess,
) -> None:
    response = Client().get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "starting"  # up, but no embedding model is active yet
    assert body["database"]["ok"] is True
    assert body["database"]["pgvector"].count(".") == 2  # e.g. "0.8.6"
    assert body["broker"]["ok"] is True
    assert body["worker"]["ok"] is True and body["worker"]["workers"]
    assert body["embedding_model"] is None
    assert body["backlog"] == {
        "embeddings_queued": 0, "backfill": None, "imports_running": 0,
    }  # fmt: skip


@pytest.mark.django_db
def test_healthz_is_503_with_a_reason_when_the_broker_is_unreachable(tmp_path: Path) -> None:
    result = _run_python(
        "import django, json\n"
        "django.setup()\n"
        "from django.test import Client\n"
        "r = Client(HTTP_HOST='localhost').get('/healthz')\n"
        "print(r.status_code, json.dumps(r.json()))\n",
        CELERY_BROKER_URL=f"redis+socket://{tmp_path}/no-such.sock",
        DJANGO_SETTINGS_MODULE="webapp.settings",
    )
    assert result.returncode == 0, result.stderr
    status, body = result.stdout.strip().split(" ", 1)
    assert status == "503"
    payload = json.loads(body)
    assert payload["status"] == "down"
    assert payload["broker"]["ok"] is False and payload["broker"]["error"]
    assert payload["database"]["ok"] is True


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DEBUG", "perhaps", "DEBUG='perhaps' is not a boolean"),
        ("DATABASE_URL", "mysql://root@localhost/shop", "must point to PostgreSQL"),
        ("CELERY_BROKER_URL", "kafka://broker:9092", "is not a redis:// or amqp:// URL"),
        ("SECURE_HSTS_SECONDS", "a year", "SECURE_HSTS_SECONDS='a year' is not an integer"),
        ("SECRET_KEY", "short", "SECRET_KEY must be at least 50 random characters"),
    ],
)
def test_settings_fail_loudly_on_bad_values(variable: str, value: str, message: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DEBUG"}
    env[variable] = value
    result = subprocess.run(
        [PYTHON, "manage.py", "check"], cwd=BASE_DIR, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_production_settings_pass_check_deploy_without_warnings() -> None:
    env = {k: v for k, v in os.environ.items() if k not in LOCAL_OVERRIDES}
    env.update(DEBUG="0", SECRET_KEY=secrets.token_urlsafe(64), ALLOWED_HOSTS="shop.example.com")
    result = subprocess.run(
        [PYTHON, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def _machine_postgres_without_pgvector() -> str:
    """The machine's own PostgreSQL on 5432 when it is there and lacks pgvector."""
    url = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        with psycopg.connect(url, connect_timeout=2) as connection:
            has_vector = connection.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
            ).fetchone()
    except psycopg.Error:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432 to check the missing-pgvector message")
    if has_vector:
        pytest.skip("the PostgreSQL on 127.0.0.1:5432 has pgvector")
    return url


def test_migrate_on_postgres_without_pgvector_says_what_to_install() -> None:
    url = _machine_postgres_without_pgvector()
    env = {**os.environ, "DATABASE_URL": url}
    result = subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput"], cwd=BASE_DIR, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "does not have the pgvector extension" in result.stderr
    assert "apt install postgresql-<major>-pgvector" in result.stderr
    assert "Traceback" not in result.stderr


def test_stack_refuses_a_database_without_pgvector_with_a_clear_message(tmp_path: Path) -> None:
    url = _machine_postgres_without_pgvector()
    env = {**os.environ, "DATABASE_URL": url, "VITRINE_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [PYTHON, "-m", "webapp.stack", "exec", "--", "true"], cwd=BASE_DIR, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "has no pgvector extension" in result.stderr
    assert "Traceback" not in result.stderr


def test_embedded_postgres_keeps_its_data_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    first = embedded.start_postgres(data_dir)
    with psycopg.connect(first.url, autocommit=True) as connection:
        connection.execute("CREATE TABLE kept (value text)")
        connection.execute("INSERT INTO kept VALUES ('still here')")
    first.stop()

    second = embedded.start_postgres(data_dir)
    try:
        with psycopg.connect(second.url) as connection:
            row = connection.execute("SELECT value FROM kept").fetchone()
    finally:
        second.stop()
    assert row == ("still here",)


@pytest.mark.django_db
def test_admin_lists_every_catalog_model(admin_client: Client) -> None:
    product = Product.objects.create(sku="SKU-1", title="Linen shirt", price="39.90")
    ProductImage.objects.create(product=product, position=0, source_url="https://x/1.jpg")
    lookbook = Lookbook.objects.create(title="Summer", slug="summer", is_published=True)
    LookbookItem.objects.create(lookbook=lookbook, product=product, position=0)
    ImportJob.objects.create(source="feed.csv")

    for url in (
        "/admin/catalog/product/", f"/admin/catalog/product/{product.pk}/change/",
        "/admin/catalog/lookbook/", f"/admin/catalog/lookbook/{lookbook.pk}/change/",
        "/admin/catalog/importjob/", "/admin/catalog/product/?q=linen",
    ):  # fmt: skip
        response = admin_client.get(url)
        assert response.status_code == 200, url
    assert b"Linen shirt" in admin_client.get("/admin/catalog/product/?q=linen").content
    assert User.objects.filter(is_superuser=True).exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_health(port: int, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    last: dict[str, object] = {}
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
                last = json.loads(reply.read())
                if last.get("status") in ("ok", "starting"):  # every service answers
                    return last
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"stack not healthy in {timeout}s; last health: {last}")


def _processes_using(data_dir: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            environ = process.info["environ"] or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if str(data_dir) in cmdline or environ.get("VITRINE_DATA_DIR") == str(data_dir):
            found.append(process)
    return found


@pytest.mark.slow
def test_stack_runs_healthy_stops_on_ctrl_c_and_keeps_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env["VITRINE_DATA_DIR"] = str(data_dir)
    command = [PYTHON, "-m", "webapp.stack", "run", "--port", str(port), "--web-workers", "1",
               "--worker-concurrency", "1"]  # fmt: skip

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, cwd=BASE_DIR, env=env, start_new_session=True)

    stack = start()
    try:
        health = _wait_for_health(port, timeout=180)
        assert health["database"]["pgvector"]  # type: ignore[index]
        assert health["worker"]["workers"]  # type: ignore[index]
        # A management command beside the running stack finds its services and its key.
        beside = {k: v for k, v in env.items() if k != "SECRET_KEY"}
        created = subprocess.run(
            [PYTHON, "manage.py", "shell", "--no-imports", "-c",
             "from catalog.models import Product; "
             "print(Product.objects.create(sku='KEEP-1', title='Kept').sku)"],
            cwd=BASE_DIR, env=beside, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        assert created.stdout.strip() == "KEEP-1"
    finally:
        os.killpg(stack.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        assert stack.wait(90) == 0
    time.sleep(1)
    assert _processes_using(data_dir) == []
    assert not (data_dir / "postgres" / "postmaster.pid").exists()  # a clean shutdown

    stack = start()
    try:
        _wait_for_health(port, timeout=180)
        services = embedded.read_services_file(data_dir)
        with psycopg.connect(services["DATABASE_URL"]) as connection:
            kept = connection.execute(
                "SELECT title FROM catalog_product WHERE sku = 'KEEP-1'"
            ).fetchone()
        assert kept == ("Kept",)
    finally:
        os.killpg(stack.pid, signal.SIGINT)
        assert stack.wait(90) == 0
