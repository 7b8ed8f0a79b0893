"""`webapp.stack run` as a new user and a crash meet it: a second stack on the same folder
is refused at once, a crashed worker or web server is restarted, beat dies with its worker.
Slow: starts the whole stack."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.support.processes import BASE_DIR
from webapp import embedded

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
            return True
    except urllib.error.HTTPError:
        return True  # 503 while a service is missing is still an answer
    except OSError:
        return False


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env["VITRINE_DATA_DIR"] = str(data_dir)
    env["VITRINE_EMBEDDINGS_WARM"] = "0"
    return env


def _command(port: int) -> list[str]:
    return [sys.executable, "-m", "webapp.stack", "run", "--port", str(port),
            "--web-workers", "1", "--worker-concurrency", "1"]  # fmt: skip


@dataclass
class Stack:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path

    def child(self, marker: str) -> psutil.Process:
        """The stack's direct child whose command line contains ``marker``."""
        for child in psutil.Process(self.process.pid).children():
            try:
                if marker in " ".join(child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        raise LookupError(marker)

    def wait_for_new_child(self, marker: str, old_pid: int, timeout: float = 60) -> psutil.Process:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                child = self.child(marker)
                if child.pid != old_pid:
                    return child
            except LookupError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"{marker} was not restarted within {timeout}s")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("stack") / "data"
    port = _free_port()
    process = subprocess.Popen(
        _command(port), cwd=BASE_DIR, env=_env(data_dir), start_new_session=True
    )
    running = Stack(process=process, port=port, data_dir=data_dir)
    deadline = time.monotonic() + 300
    while not _answers(port):
        assert process.poll() is None, "the stack exited during start-up"
        assert time.monotonic() < deadline, "the stack did not start in 300 s"
        time.sleep(1)
    yield running
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def test_a_second_stack_on_the_same_folder_is_refused_at_once_and_the_first_keeps_running(
    stack: Stack,
) -> None:
    started = time.monotonic()
    second = subprocess.run(
        _command(_free_port()), cwd=BASE_DIR, env=_env(stack.data_dir),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert time.monotonic() - started < 15
    assert second.returncode != 0
    message = second.stdout + second.stderr
    assert f"pid {stack.process.pid}" in message
    assert f"http://127.0.0.1:{stack.port}/" in message
    assert "Vitrine is running" not in message
    # The first stack's services are untouched.
    assert embedded.read_services_file(stack.data_dir)["DATABASE_URL"]
    assert (stack.data_dir / "run" / "redis.sock").exists()
    assert _answers(stack.port)


def test_a_stack_on_a_taken_port_says_so_before_starting_anything(
    stack: Stack, tmp_path: Path
) -> None:
    other = subprocess.run(
        _command(stack.port), cwd=BASE_DIR, env=_env(tmp_path / "other"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert other.returncode != 0
    assert f"cannot listen on 127.0.0.1:{stack.port}" in other.stdout
    assert "--port" in other.stdout
    assert not (tmp_path / "other" / "postgres").exists()


def test_make_run_takes_a_port() -> None:
    # What `make run PORT=8123` would run (make -n prints it and runs nothing).
    planned = subprocess.run(
        ["make", "-n", "run", "PORT=8123"], cwd=BASE_DIR, capture_output=True, text=True,
        timeout=60, env={k: v for k, v in os.environ.items() if k != "PORT"},
    )  # fmt: skip
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.splitlines()[-1].endswith("-m webapp.stack run --port 8123")


def test_a_killed_worker_is_restarted_and_its_beat_goes_with_it(stack: Stack) -> None:
    worker = stack.child("celery")
    group = os.getpgid(worker.pid)
    leftovers = [p.pid for p in worker.children(recursive=True)]
    assert leftovers, "the worker should have pool and beat processes"

    os.kill(worker.pid, signal.SIGKILL)

    restarted = stack.wait_for_new_child("celery", worker.pid)
    assert os.getpgid(restarted.pid) != group
    deadline = time.monotonic() + 15
    while any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in leftovers
    ):
        assert time.monotonic() < deadline, "the old worker's beat/pool processes lived on"
        time.sleep(0.2)
    assert _answers(stack.port)  # the web server was not taken down with it
    assert stack.process.poll() is None


def test_a_killed_web_server_is_restarted(stack: Stack) -> None:
    web = stack.child("gunicorn")
    os.kill(web.pid, signal.SIGKILL)
    stack.wait_for_new_child("gunicorn", web.pid)
    deadline = time.monotonic() + 60
    while not _answers(stack.port):
        assert time.monotonic() < deadline, "the web server did not come back"
        time.sleep(0.5)
    assert stack.process.poll() is None


def test_each_process_logs_to_a_rotating_file_without_static_lines_or_4xx_warnings(
    stack: Stack,
) -> None:
    base = f"http://127.0.0.1:{stack.port}"
    for path in ("/", "/static/css/vitrine.css", "/nowhere-at-all/"):
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(base + path, timeout=30).read()
    logs = stack.data_dir / "logs"
    deadline = time.monotonic() + 15
    while '"GET /nowhere-at-all/ HTTP/1.1" 404' not in _read(logs / "web.log"):
        assert time.monotonic() < deadline, _read(logs / "web.log")[-2000:]
        time.sleep(0.3)
    web = _read(logs / "web.log")
    assert '"GET / HTTP/1.1" 200' in web
    assert "/static/" not in web
    assert not [line for line in web.splitlines() if "WARNING" in line]
    assert "INFO/MainProcess" in _read(logs / "worker.log")  # celery's own log lines


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""
