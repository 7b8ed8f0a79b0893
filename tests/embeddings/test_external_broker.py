"""Several worker processes on an external RabbitMQ broker import and embed a catalog with no
product lost and none embedded twice. Slow: it runs the whole stack (`webapp.stack run`)
with CELERY_BROKER_URL=amqp://… plus two more workers, as extra worker hosts would.

Every write of a vector is recorded by a trigger in the stack's database, so "embedded
twice" is a count, not a guess. Needs the machine's RabbitMQ (VITRINE_TEST_AMQP_URL,
default amqp://guest:guest@127.0.0.1:5672//) and the H&M photos; skips without them.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kombu
import psycopg
import pytest

from tests.support.processes import BASE_DIR
from webapp import embedded

pytestmark = [pytest.mark.slow, pytest.mark.datasets]

AMQP_URL = os.environ.get("VITRINE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUES = ("default", "ingest", "embeddings")
PRODUCTS = 150  # three embedding batches of 64: enough for the work to spread

AUDIT_SQL = """
CREATE TABLE vector_writes (
    product_id bigint, model_id bigint, kind text, backend_pid int, at timestamptz
);
CREATE FUNCTION vector_write_audit() RETURNS trigger AS $$
BEGIN
    INSERT INTO vector_writes
    VALUES (NEW.product_id, NEW.model_id, NEW.kind, pg_backend_pid(), clock_timestamp());
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER vector_write_audit AFTER INSERT OR UPDATE ON embeddings_productembedding
    FOR EACH ROW EXECUTE FUNCTION vector_write_audit();
"""


@pytest.fixture
def rabbitmq() -> str:
    try:
        with kombu.Connection(AMQP_URL, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1)
            channel = connection.default_channel
            for name in QUEUES:  # messages left by an earlier, interrupted run
                queue = kombu.Queue(name, kombu.Exchange(name), routing_key=name, channel=channel)
                queue.declare()  # as Celery declares it, so a first run finds it too
                queue.purge()
    except Exception as error:
        pytest.skip(f"no RabbitMQ at {AMQP_URL} ({error})")
    return AMQP_URL


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _scalar(connection: psycopg.Connection[Any], sql: str) -> Any:
    try:
        row = connection.execute(sql).fetchone()
    except psycopg.errors.UndefinedTable:  # the stack is still migrating
        return 0
    return row[0] if row else None


def _wait_for(predicate: Any, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _hm_feed(datasets_dir: Path, target: Path, count: int) -> list[str]:
    """A copy of the first `count` H&M articles with photos, as an `--preset hm` folder."""
    (target / "images").mkdir(parents=True)
    with (datasets_dir / "hm" / "articles.csv").open() as source:
        reader = csv.DictReader(source)
        photos = datasets_dir / "hm" / "images"
        rows = [r for r in reader if (photos / f"{r['article_id']}.jpg").is_file()][:count]
        with (target / "articles.csv").open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=reader.fieldnames or [])
            writer.writeheader()
            writer.writerows(rows)
    for row in rows:
        name = f"{row['article_id']}.jpg"
        shutil.copy(datasets_dir / "hm" / "images" / name, target / "images" / name)
    return [row["article_id"] for row in rows]


def test_workers_on_rabbitmq_embed_every_imported_product_exactly_once(
    rabbitmq: str, datasets_dir: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CACHE_URL")}
    env.update(CELERY_BROKER_URL=rabbitmq, VITRINE_DATA_DIR=str(data_dir), DEBUG="1")
    command = [sys.executable, "-m", "webapp.stack", "run", "--port", str(_free_port()),
               "--web-workers", "1", "--worker-concurrency", "1"]  # fmt: skip
    stack = subprocess.Popen(command, cwd=BASE_DIR, env=env, start_new_session=True)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        _wait_for(
            lambda: "DATABASE_URL" in embedded.read_services_file(data_dir),
            timeout=120,
            what="the stack's services",
        )
        services = embedded.read_services_file(data_dir)
        worker_env = {**env, **services}
        with psycopg.connect(services["DATABASE_URL"], autocommit=True) as database:
            _wait_for(
                lambda: _scalar(
                    database, "SELECT count(*) FROM embeddings_embeddingmodel WHERE state='active'"
                ),
                timeout=400,
                what="the default model to go active",
            )
            database.execute(AUDIT_SQL)
            for n in range(2):  # two more worker "hosts" on the same broker and database
                workers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "celery",
                            "-A",
                            "webapp",
                            "worker",
                            "-Q",
                            ",".join(QUEUES),
                            "-c",
                            "1",
                            "-n",
                            f"extra{n}@%h",
                            "--loglevel",
                            "WARNING",
                        ],
                        cwd=BASE_DIR,
                        env=worker_env,
                        start_new_session=True,
                    )
                )
            skus = _hm_feed(datasets_dir, tmp_path / "feed", PRODUCTS)
            imported = subprocess.run(
                [sys.executable, "manage.py", "import_catalog", str(tmp_path / "feed"),
                 "--preset", "hm", "--no-progress"],
                cwd=BASE_DIR, env=worker_env, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            assert imported.returncode == 0, imported.stderr[-2000:]

            active_vectors = (
                "SELECT count(*) FROM embeddings_productembedding e "
                "JOIN embeddings_embeddingmodel m ON m.id = e.model_id WHERE m.state = 'active'"
            )
            _wait_for(
                lambda: _scalar(database, active_vectors) >= 3 * len(skus),
                timeout=600,
                what="every product's image, text and fused vectors",
            )
            time.sleep(20)  # a sweep or a redelivery that would embed again has time to

            assert _scalar(database, "SELECT count(*) FROM catalog_product") == len(skus)
            assert _scalar(database, active_vectors) == 3 * len(skus)
            rewritten = database.execute(
                "SELECT product_id, kind, count(*) FROM vector_writes "
                "GROUP BY product_id, model_id, kind HAVING count(*) > 1"
            ).fetchall()
            assert rewritten == [], f"vectors written more than once: {rewritten[:10]}"
            assert _scalar(database, "SELECT count(*) FROM vector_writes") == 3 * len(skus)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(60)
        os.killpg(stack.pid, signal.SIGINT)
        assert stack.wait(120) == 0
