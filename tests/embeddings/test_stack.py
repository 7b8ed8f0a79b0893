"""The whole stack on a fresh data directory: the default model goes live by itself and an
imported product gets its vectors with no command run. Slow (starts everything).

Set VITRINE_BENCH_RESULTS=<dir> to write the measured latencies to
<dir>/import_to_vectors_stack.json.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest

from embeddings.ml import DEFAULT_MODEL_FOLDERS, DEFAULT_MODEL_VERSION
from tests.support.processes import BASE_DIR
from webapp import embedded

pytestmark = [pytest.mark.slow, pytest.mark.datasets]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _health(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            return dict(json.loads(reply.read()))
    except OSError:
        return {}


def _vector_count(connection: psycopg.Connection[Any], sku: str) -> int:
    row = connection.execute(
        "SELECT count(*) FROM embeddings_productembedding e "
        "JOIN catalog_product p ON p.id = e.product_id "
        "JOIN embeddings_embeddingmodel m ON m.id = e.model_id "
        "WHERE m.state = 'active' AND p.sku = %s",
        [sku],
    ).fetchone()
    return int(row[0]) if row else 0


def test_a_fresh_stack_activates_the_default_model_and_embeds_imports_by_itself(
    datasets_dir: Path, tmp_path: Path
) -> None:
    weights = BASE_DIR / "embeddings" / DEFAULT_MODEL_FOLDERS[DEFAULT_MODEL_VERSION]
    assert (weights / "model.safetensors").is_file(), "the bundled default model is missing"
    data_dir, port = tmp_path / "data", _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env["VITRINE_DATA_DIR"] = str(data_dir)
    command = [sys.executable, "-m", "webapp.stack", "run", "--port", str(port),
               "--web-workers", "1", "--worker-concurrency", "2"]  # fmt: skip
    started = time.monotonic()
    stack = subprocess.Popen(command, cwd=BASE_DIR, env=env, start_new_session=True)
    try:
        while _health(port).get("embedding_model") is None:
            assert time.monotonic() - started < 400, "the default model never went active"
            time.sleep(1)
        to_active = time.monotonic() - started
        database_url = embedded.read_services_file(data_dir)["DATABASE_URL"]
        lines = (datasets_dir / "hm" / "articles.csv").read_text().splitlines()
        figures: list[dict[str, float]] = []
        for n, line in enumerate(lines[1:5]):
            sku = line.split(",")[0]
            feed = tmp_path / f"feed-{n}"
            (feed / "images").mkdir(parents=True)
            (feed / "articles.csv").write_text(f"{lines[0]}\n{line}\n")
            shutil.copy(datasets_dir / "hm" / "images" / f"{sku}.jpg", feed / "images")
            if n == 1:
                time.sleep(35)  # two sweeps: every worker process has loaded the model
            figures.append(_import_and_wait(feed, sku, database_url, {**env, "DEBUG": "1"}))
    finally:
        os.killpg(stack.pid, signal.SIGINT)
        assert stack.wait(120) == 0
    result = {
        "fresh_stack_to_default_model_active_s": round(to_active, 1),
        "imports": figures,
    }
    print(json.dumps(result, indent=2))
    if os.environ.get("VITRINE_BENCH_RESULTS"):
        target = Path(os.environ["VITRINE_BENCH_RESULTS"]) / "import_to_vectors_stack.json"
        target.write_text(json.dumps(result, indent=2) + "\n")
    assert all(f["product_row_committed_to_vectors_s"] < 5 for f in figures[1:])


def _import_and_wait(feed: Path, sku: str, url: str, env: dict[str, str]) -> dict[str, float]:
    command = [sys.executable, "manage.py", "import_catalog", str(feed), "--preset", "hm",
               "--no-progress"]  # fmt: skip
    with psycopg.connect(url, autocommit=True) as connection:
        start = time.monotonic()
        importer = subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=subprocess.DEVNULL)
        row_at = None
        while _vector_count(connection, sku) < 3:
            if (
                row_at is None
                and connection.execute(
                    "SELECT 1 FROM catalog_product WHERE sku = %s", [sku]
                ).fetchone()
            ):
                row_at = time.monotonic()
            assert time.monotonic() - start < 120, f"no vectors for {sku}"
            time.sleep(0.01)
        done = time.monotonic()
        assert importer.wait(60) == 0
    return {
        "command_start_to_vectors_s": round(done - start, 2),
        "product_row_committed_to_vectors_s": round(done - (row_at or start), 2),
    }
