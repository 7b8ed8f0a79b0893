"""The whole stack restarted while a page streams events: no acknowledged event is lost.

Slow: starts `python -m webapp.stack run` (embedded PostgreSQL and Redis, worker, gunicorn)
twice on a data directory of its own, stopping it (as Ctrl-C does) mid-stream.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.processes import BASE_DIR
from webapp import embedded

pytestmark = [pytest.mark.slow]
ORIGIN = "https://www.brand.example"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stack(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL")
    }
    env["VITRINE_DATA_DIR"] = str(data_dir)
    command = [sys.executable, "-m", "webapp.stack", "run", "--port", str(port),
               "--web-workers", "1", "--worker-concurrency", "1"]  # fmt: skip
    return subprocess.Popen(command, cwd=BASE_DIR, env=env, start_new_session=True)


def _wait_until_up(port: int, stack: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert stack.poll() is None, "the stack exited while starting"
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status in (200, 503):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError("the stack did not answer in 180 s")


class Stream:
    """One page sending batches of 10 events, each with a unique sku, until stopped."""

    def __init__(self, port: int, key: str) -> None:
        self.port, self.key = port, key
        self.acknowledged: set[str] = set()
        self.unanswered = 0
        self.serial = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            skus = [f"E-{self.serial}-{i}" for i in range(10)]
            self.serial += 1
            events = [{"type": "impression", "surface": "similar", "sku": s} for s in skus]
            body = json.dumps(
                {"session_id": "restart-test-session-0001", "consent": True, "events": events}
            )
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request(
                    "POST", f"/api/v1/events/?key={self.key}", body=body,
                    headers={"Content-Type": "text/plain", "Origin": ORIGIN},
                )  # fmt: skip
                reply = connection.getresponse()
                reply.read()
                if reply.status == 202:
                    self.acknowledged.update(skus)
                else:
                    self.unanswered += 1
            except OSError:
                self.unanswered += 1
                time.sleep(0.1)


def _create_key(data_dir: Path) -> str:
    url = embedded.read_services_file(data_dir)["DATABASE_URL"]
    key = "pk_restart_test_key_0123456789abcdef"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO search_publishablekey (name, key, allowed_origins, created_at) "
            "VALUES ('restart', %s, %s, now())",
            [key, [ORIGIN]],
        )
    return key


def _stored_skus(data_dir: Path) -> set[str]:
    url = embedded.read_services_file(data_dir)["DATABASE_URL"]
    with psycopg.connect(url) as connection:
        rows: list[Any] = connection.execute("SELECT sku FROM search_event").fetchall()
    return {row[0] for row in rows}


def test_no_acknowledged_event_is_lost_across_a_stack_restart(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", _free_port()
    stack = _stack(data_dir, port)
    try:
        _wait_until_up(port, stack)
        stream = Stream(port, _create_key(data_dir))
        stream.thread.start()
        while len(stream.acknowledged) < 500:
            time.sleep(0.1)
        os.killpg(stack.pid, signal.SIGINT)  # Ctrl-C, mid-stream
        assert stack.wait(120) == 0
        before_restart = len(stream.acknowledged)
        stack = _stack(data_dir, port)
        _wait_until_up(port, stack)
        while len(stream.acknowledged) < before_restart + 500:
            time.sleep(0.1)
        stream.stop.set()
        stream.thread.join(30)
        stored = _stored_skus(data_dir)
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGINT)
            stack.wait(120)
    assert stream.unanswered > 0, "the stream never met the stopped stack: not mid-stream"
    missing = stream.acknowledged - stored
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
