"""Run Vitrine's whole local stack, or one command inside its environment.

    python -m webapp.stack run               # services, migrations, worker, beat, web server
    python -m webapp.stack exec -- CMD ...   # embedded services around one command (tests)

Embedded PostgreSQL+pgvector and Redis are started only for the variables that are unset
(DATABASE_URL, CELERY_BROKER_URL); given ones are used as they are. The cache (CACHE_URL)
defaults to another database of the broker's Redis. Ctrl-C (or SIGTERM)
stops the web server, lets the worker finish its current task, then stops Redis and
PostgreSQL cleanly, so the data directory is never left mid-write. One module over 400
lines: the supervisor's start order, restarts and shutdown read top to bottom.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import logging
import logging.handlers
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psycopg

from webapp import embedded
from webapp.env import redis_cache_url_beside

BASE_DIR = Path(__file__).resolve().parent.parent
SHUTDOWN_GRACE_SECONDS = 30
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Children get SIGTERM if the launcher itself is killed, so nothing is orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _say(message: str) -> None:
    print(f"[vitrine] {message}", flush=True)


def _data_dir() -> Path:
    value = os.environ.get("VITRINE_DATA_DIR")
    return Path(value).resolve() if value else BASE_DIR / ".data"


def _log_dir() -> Path:
    """settings.LOG_DIR, read without starting Django (the supervisor never does)."""
    value = os.environ.get("VITRINE_LOG_DIR")
    return Path(value).resolve() if value else _data_dir() / "logs"


def _local_secret_key(data_dir: Path) -> str:
    """A random key kept in the data directory, so sessions survive restarts."""
    path = data_dir / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(64))
        path.chmod(0o600)
    return path.read_text().strip()


def _local_http_defaults(data_dir: Path) -> dict[str, str]:
    """Settings for serving on http://127.0.0.1 (production deployments set their own)."""
    return {
        "SECRET_KEY": _local_secret_key(data_dir),
        "SECURE_SSL_REDIRECT": "0",
        "SESSION_COOKIE_SECURE": "0",
        "CSRF_COOKIE_SECURE": "0",
        "SECURE_HSTS_SECONDS": "0",
        "VITRINE_DATA_DIR": str(data_dir),
    }


def _check_pgvector(database_url: str) -> None:
    """Exit with a clear message when the database cannot offer pgvector."""
    from catalog.checks import PGVECTOR_MISSING_HINT  # no Django setup needed for a constant

    try:
        with psycopg.connect(database_url, connect_timeout=5) as connection:
            row = connection.execute(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
            ).fetchone()
    except psycopg.Error as error:
        raise SystemExit(f"[vitrine] Cannot connect to DATABASE_URL: {error}") from None
    if row is None:
        raise SystemExit(
            "[vitrine] The PostgreSQL at DATABASE_URL has no pgvector extension ('vector'), "
            f"which Vitrine needs to store embeddings.\n[vitrine] {PGVECTOR_MISSING_HINT}"
        )


def _cache_description(environment: dict[str, str]) -> str:
    """Which cache the children will use, for a start-up line (URLs may hold passwords)."""
    if "CACHE_URL" in environment:
        return "cache: CACHE_URL"
    if redis_cache_url_beside(environment["CELERY_BROKER_URL"]) is not None:
        return "cache: another database of the broker's Redis"
    return "cache: per process (the broker is not Redis and CACHE_URL is unset)"


@contextlib.contextmanager
def services(data_dir: Path) -> Iterator[dict[str, str]]:
    """Start the embedded services that are not configured; yield the environment to use."""
    environment = _local_http_defaults(data_dir)
    environment.update({k: v for k, v in os.environ.items() if k in environment and v})
    started: list[embedded.EmbeddedPostgres | embedded.EmbeddedRedis] = []
    try:
        if os.environ.get("DATABASE_URL"):
            environment["DATABASE_URL"] = os.environ["DATABASE_URL"]
        else:
            postgres = embedded.start_postgres(data_dir / "postgres")
            started.append(postgres)
            environment["DATABASE_URL"] = postgres.url
            _say(f"embedded PostgreSQL with pgvector in {postgres.data_dir}")
        if os.environ.get("CELERY_BROKER_URL"):
            environment["CELERY_BROKER_URL"] = os.environ["CELERY_BROKER_URL"]
        else:
            redis = embedded.start_redis(data_dir / "redis", data_dir / "run" / "redis.sock")
            started.append(redis)
            environment["CELERY_BROKER_URL"] = redis.url
            _say(f"embedded Redis on {redis.socket_path}")
        if os.environ.get("CACHE_URL"):
            environment["CACHE_URL"] = os.environ["CACHE_URL"]
        # Otherwise settings derive the cache from the broker (webapp.env.redis_cache_url_beside);
        # it is not put in the children's environment, so a stack started from inside this one
        # (the tests do) derives its own instead of inheriting this one's.
        _check_pgvector(environment["DATABASE_URL"])
        _say(_cache_description(environment))
        recorded = ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "SECRET_KEY")
        embedded.write_services_file(
            data_dir, {k: environment[k] for k in recorded if k in environment}
        )
        yield environment
    finally:
        embedded.remove_services_file(data_dir)
        for service in reversed(started):
            service.stop()
        if started:
            _say("embedded services stopped")


#: Seconds before restarting a crashed child: 1, 2, 4 ... up to this. A child that ran
#: longer than HEALTHY_SECONDS before it crashed starts again from 1.
RESTART_BACKOFF_MAX_SECONDS = 30.0
HEALTHY_SECONDS = 60.0


LOG_FILE_BYTES = 10 * 1024 * 1024  # each process's log rotates at this size...
LOG_FILE_BACKUPS = 5  # ...keeping this many older files


def _log_file_handler(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def _tee_output(stream: IO[bytes], log: logging.Handler) -> None:
    """Copies a child's output to the terminal and to its log file, line by line.

    The supervisor is the file's one writer, so rotation is safe even though the web server
    runs several worker processes; crashes and tracebacks printed outside `logging` land
    in the file too.
    """
    for raw in iter(stream.readline, b""):
        sys.stdout.buffer.write(raw)
        sys.stdout.flush()
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        log.handle(logging.makeLogRecord({"msg": line, "args": None}))
    stream.close()


@dataclass
class _Child:
    name: str
    command: list[str]
    environment: dict[str, str] = field(default_factory=dict)  # on top of the stack's
    log: logging.Handler | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    crashes: int = 0
    restart_at: float | None = None


class _Supervisor:
    """Starts child processes in their own sessions, restarts those that crash (with
    back-off), and stops them in reverse order.

    Each child leads its own process group, so stopping or burying one takes its whole
    group: the worker's embedded beat and pool processes go with the worker, instead of
    beat sending tasks on its own after the worker's main process died.
    """

    def __init__(self, environment: dict[str, str], *, log_dir: Path | None = None) -> None:
        self.environment = {**os.environ, **environment}
        self.children: list[_Child] = []
        self.log_dir = log_dir

    def _spawn(self, child: _Child) -> None:
        child.process = subprocess.Popen(
            child.command,
            cwd=BASE_DIR,
            env={**self.environment, **child.environment},
            start_new_session=True,  # we forward Ctrl-C ourselves, in order
            preexec_fn=_die_with_parent,
            stdout=subprocess.PIPE if child.log else None,
            stderr=subprocess.STDOUT if child.log else None,
        )
        if child.log and child.process.stdout:
            threading.Thread(
                target=_tee_output, args=(child.process.stdout, child.log), daemon=True
            ).start()
        child.started_at = time.monotonic()
        child.restart_at = None

    def start(
        self, name: str, command: Sequence[str], environment: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        # "web server" logs to web.log, "worker" to worker.log, "training worker" to
        # training.log.
        log_path = self.log_dir / f"{name.split()[0]}.log" if self.log_dir else None
        log = _log_file_handler(log_path) if log_path else None
        child = _Child(
            name=name, command=list(command), environment=dict(environment or {}), log=log
        )
        self._spawn(child)
        self.children.append(child)
        assert child.process is not None
        return child.process

    def run_to_completion(self, command: Sequence[str]) -> int:
        return subprocess.call(list(command), cwd=BASE_DIR, env=self.environment)

    def supervise_once(self) -> None:
        """Restart children that exited, each after its back-off delay."""
        now = time.monotonic()
        for child in self.children:
            process = child.process
            if child.restart_at is not None:
                if now >= child.restart_at:
                    _say(f"restarting {child.name}")
                    self._spawn(child)
                continue
            if process is None or (code := process.poll()) is None:
                continue
            _bury_group(process.pid)
            if now - child.started_at > HEALTHY_SECONDS:
                child.crashes = 0
            child.crashes += 1
            delay = min(RESTART_BACKOFF_MAX_SECONDS, 2.0 ** (child.crashes - 1))
            child.restart_at = now + delay
            _say(f"{child.name} exited with status {code}; restarting it in {delay:g}s")

    def stop_all(self) -> None:
        for child in reversed(self.children):
            process = child.process
            if process is None:
                continue
            if process.poll() is None:
                _say(f"stopping {child.name}")
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(SHUTDOWN_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    _say(f"{child.name} did not stop in {SHUTDOWN_GRACE_SECONDS}s; killing it")
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            _bury_group(process.pid)


def _bury_group(pgid: int) -> None:
    """Stop whatever is left of a child's process group (its children outlive a killed
    leader: Celery's beat and pool processes, gunicorn's workers)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            os.killpg(pgid, 0)  # raises ProcessLookupError once the group is empty
            time.sleep(0.1)
        os.killpg(pgid, signal.SIGKILL)


class _Interrupted(Exception):
    pass


def _raise_interrupted(signum: int, frame: object) -> None:
    raise _Interrupted


class StackAlreadyRunning(SystemExit):
    pass


@contextlib.contextmanager
def stack_lock(data_dir: Path, *, url: str) -> Iterator[None]:
    """Hold the data directory for this stack; refuse at once if another stack holds it.

    A second stack on the same folder used to start, fail to bind, then delete the first
    one's Redis socket and services file on its way out. The lock is the kernel's
    (``flock``): it goes with the process, so a crashed stack never leaves it behind.
    """
    run_dir = data_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "stack.lock"
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        try:
            holder = json.loads(handle.read() or "{}")
        except ValueError:
            holder = {}
        handle.close()
        raise StackAlreadyRunning(
            f"[vitrine] Vitrine is already running in {data_dir} (pid {holder.get('pid', '?')}, "
            f"{holder.get('url', 'URL unknown')}). Stop it first (Ctrl-C in its terminal), "
            "or run this one on another VITRINE_DATA_DIR."
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "url": url}))
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


def _port_problem(host: str, port: int) -> str | None:
    """Why the web server could not listen on host:port, checked before anything starts."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return (
                f"cannot listen on {host}:{port} ({error.strerror}): another program uses it. "
                "Choose another port: python -m webapp.stack run --port 8001 (make run PORT=8001)"
            )
    return None


def _wait_until_listening(host: str, port: int, web: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and web.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return True
        time.sleep(0.2)
    return False


#: Gunicorn processes per usable core, and threads in each: see `web_server_size`.
WEB_PROCESSES_PER_CORE = 1
WEB_THREADS = 4


def web_server_size(cpus: int | None = None) -> tuple[int, int]:
    """Gunicorn's (processes, threads each) for `cpus` usable cores (default: this process's).

    A shopper request is mostly Python (ranking, templates) holding the GIL, with waits on
    PostgreSQL, Redis and the encoder between: one process per core keeps every core busy
    with Python, and four threads each fill the waits. Each process holds its own copy of
    the encoder (about 1 GB once it served a query), so more processes than cores cost
    memory for no gain: on 2 cores, 4 processes x 2 threads served 20.9 / 12.8 requests/s
    to 50 / 20 shoppers and 2 x 4 served 22.3 / 19.7 in the same run
    (bench/results/load.json; other work kept the load average at 12-15, and 2 x 4 ran
    second, on a results cache the first had warmed). At least two, so one process
    restarting leaves one serving.
    """
    usable = cpus if cpus is not None else len(os.sched_getaffinity(0))
    return max(2, usable * WEB_PROCESSES_PER_CORE), WEB_THREADS


def run(
    host: str,
    port: int,
    web_workers: int | None,
    worker_concurrency: int,
    web_threads: int | None = None,
) -> int:
    """Bring up the whole stack and block until Ctrl-C, restarting children that crash."""
    data_dir = _data_dir()
    url = f"http://{host}:{port}/"
    signal.signal(signal.SIGTERM, _raise_interrupted)
    signal.signal(signal.SIGINT, _raise_interrupted)
    python = sys.executable
    try:
        with stack_lock(data_dir, url=url):
            if problem := _port_problem(host, port):
                _say(problem)
                return 1
            with services(data_dir) as environment:
                return _run_children(
                    environment, python=python, host=host, port=port, url=url,
                    web_workers=web_workers, worker_concurrency=worker_concurrency,
                    web_threads=web_threads,
                )  # fmt: skip
    except _Interrupted:
        return 130
    except embedded.EmbeddedServiceError as error:
        _say(str(error))
        return 1


def _run_children(
    environment: dict[str, str],
    *,
    python: str,
    host: str,
    port: int,
    url: str,
    web_workers: int | None,
    worker_concurrency: int,
    web_threads: int | None = None,
) -> int:
    sized_workers, sized_threads = web_server_size()
    web_workers = web_workers or sized_workers
    web_threads = web_threads or sized_threads
    supervisor = _Supervisor(environment, log_dir=_log_dir())
    try:
        manage = [python, "manage.py"]
        if supervisor.run_to_completion([*manage, "migrate", "--noinput"]) != 0:
            _say("migrations failed; see above")
            return 1
        supervisor.run_to_completion([*manage, "collectstatic", "--noinput", "-v0"])
        supervisor.start(
            "worker",
            [
                python, "-m", "celery", "-A", "webapp", "worker", "--beat",
                "-Q", "default,ingest,embeddings", "-c", str(worker_concurrency),
                "--loglevel", os.environ.get("LOG_LEVEL", "INFO"), "-n", "vitrine@%h",
            ],
        )  # fmt: skip
        # Fine-tuning and evaluation have a worker of their own, so imports and embedding
        # never queue behind them. Solo pool: the task runs in the worker's main process,
        # where Ctrl-C's shutdown signal lands, so a fine-tune saves its state and stops
        # instead of being lost (it resumes when this worker starts again).
        supervisor.start(
            "training worker",
            [
                python, "-m", "celery", "-A", "webapp", "worker", "-Q", "training",
                "--pool", "solo", "--loglevel", os.environ.get("LOG_LEVEL", "INFO"),
                "-n", "vitrine-training@%h",
            ],
            environment={"VITRINE_EMBEDDINGS_WARM": "0"},
        )  # fmt: skip
        # Each web worker encodes one shopper query at a time: one torch thread each is
        # fastest (measured: 2 threads per process on 2 cores ran 2-3x slower).
        supervisor.environment.setdefault("VITRINE_TORCH_THREADS", "1")
        web = supervisor.start(
            "web server",
            [
                python, "-m", "gunicorn", "webapp.wsgi", "--bind", f"{host}:{port}",
                "--workers", str(web_workers), "--threads", str(web_threads), "--timeout", "120",
                "--access-logfile", "-",
            ],
        )  # fmt: skip
        if _wait_until_listening(host, port, web):
            _say(f"Vitrine is running at {url} (Ctrl-C stops everything)")
        else:
            _say(f"the web server did not start listening on {host}:{port}; see above")
        while True:
            supervisor.supervise_once()
            time.sleep(0.5)
    except _Interrupted:
        _say("shutting down")
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # cut the clean stop short
        supervisor.stop_all()


#: Marks a data directory made by a throw-away run (`exec --throwaway`), which deletes it.
THROWAWAY_MARK = ".vitrine-throwaway"


def throwaway_claim(data_dir: Path) -> bool:
    """Mark `data_dir` as a throw-away run's, unless it holds anything else: a retailer's
    data directory named by VITRINE_DATA_DIR (`make test` runs with --throwaway) must never
    be deleted. An earlier throw-away run's leftovers (it was killed) may be reused."""
    mark = data_dir / THROWAWAY_MARK
    if data_dir.is_dir() and any(data_dir.iterdir()) and not mark.exists():
        return False
    data_dir.mkdir(parents=True, exist_ok=True)
    mark.touch()
    return True


def exec_command(command: Sequence[str], throwaway: bool) -> int:
    """Run one command with the embedded services around it; return its exit status."""
    if throwaway and "VITRINE_DATA_DIR" not in os.environ:
        data_dir = Path(tempfile.mkdtemp(prefix="vitrine-"))
        os.environ["VITRINE_DATA_DIR"] = str(data_dir)
    else:
        data_dir = _data_dir()
        if throwaway and not throwaway_claim(data_dir):
            _say(
                f"{data_dir} (VITRINE_DATA_DIR) holds files a throw-away run did not make, and "
                "a throw-away run deletes its data directory when it ends: refusing. Point "
                "VITRINE_DATA_DIR at a new folder, or unset it for a temporary one."
            )
            return 2
    # A stack running on the same folder owns its services: a second set would break it.
    lock = (
        contextlib.nullcontext()
        if throwaway
        else stack_lock(data_dir, url=f"exec of {' '.join(command)[:100]}")
    )
    # SIGTERM (a CI timeout, `kill`) must stop the services too, not orphan them.
    signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        with lock, services(data_dir) as environment:
            child = subprocess.Popen(list(command), env={**os.environ, **environment})
            try:
                return child.wait()
            except _Interrupted:
                child.terminate()
                try:
                    child.wait(SHUTDOWN_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                return 128 + signal.SIGTERM
    finally:
        if throwaway:
            embedded.clear_directory(data_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webapp.stack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run the whole stack")
    run_parser.add_argument("--host", default=os.environ.get("VITRINE_HOST", "127.0.0.1"))
    run_parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "8000")),
        help="port of the web server (default: $PORT or 8000); make run PORT=8001",
    )
    run_parser.add_argument(
        "--web-workers", type=int, default=None, help="gunicorn processes (default: sized)"
    )
    run_parser.add_argument(
        "--web-threads", type=int, default=None, help="threads each (default: sized)"
    )
    run_parser.add_argument("--worker-concurrency", type=int, default=2)
    exec_parser = commands.add_parser("exec", help="run a command inside the environment")
    exec_parser.add_argument(
        "--throwaway", action="store_true", help="use a temporary data directory (tests)"
    )
    exec_parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(
            args.host, args.port, args.web_workers, args.worker_concurrency, args.web_threads
        )
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not command:
        parser.error("exec needs a command after --")
    return exec_command(command, throwaway=args.throwaway)


if __name__ == "__main__":
    sys.exit(main())
