"""Real processes for tests: a Celery worker against the test database, and helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

BASE_DIR = Path(__file__).resolve().parents[2]


def test_database_url() -> str:
    """DATABASE_URL with the database name swapped for pytest-django's test database."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    name = settings.DATABASES["default"]["NAME"]
    return urlunsplit(parts._replace(path=f"/{name}"))


def subprocess_environment(**overrides: str) -> dict[str, str]:
    """The test run's environment, pointed at the test database."""
    return {**os.environ, "DATABASE_URL": test_database_url(), **overrides}


class WorkerProcess:
    """A real `celery worker` subprocess consuming the project's queues."""

    def __init__(
        self,
        queues: str = "default,ingest,embeddings",
        concurrency: int = 1,
        pool: str = "prefork",
        environment: dict[str, str] | None = None,
    ) -> None:
        self.name = f"test-{uuid.uuid4().hex[:8]}@%h"
        self.queues = queues
        self.concurrency = concurrency
        self.pool = pool
        self.environment = environment or {}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0, *, ping: bool = True) -> WorkerProcess:
        """Spawn the worker; wait until it answers a ping unless `ping` is False (a solo-pool
        worker that takes a long task at once answers no ping until the task ends)."""
        from webapp.celery import app

        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "webapp", "worker",
                "-Q", self.queues, "-c", str(self.concurrency), "-P", self.pool, "-n", self.name,
                "--without-gossip", "--without-mingle", "--loglevel", "WARNING",
            ],
            cwd=BASE_DIR,
            env=subprocess_environment(**self.environment),
            start_new_session=True,
        )  # fmt: skip
        if not ping:
            return self
        hostname = self.name.replace("%h", os.uname().nodename)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"celery worker exited with {self.process.returncode}")
            replies = app.control.ping(destination=[hostname], timeout=0.5) or []
            if replies:
                return self
        self.kill()
        raise RuntimeError("celery worker did not answer a ping in time")

    def kill(self) -> None:
        """SIGKILL the worker and its pool children: a crash, not a shutdown."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 30.0) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
