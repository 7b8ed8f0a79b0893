"""`python -m webapp.stack exec`: the services it starts around a command stop with it,
also when the launcher itself is told to stop (SIGTERM from a CI timeout or `kill`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.processes import BASE_DIR


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has stopped all the same.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "\\nState:\\tZ" not in status.read_text()


def test_sigterm_to_exec_stops_its_embedded_services(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env["VITRINE_DATA_DIR"] = str(data_dir)
    launcher = subprocess.Popen(
        [sys.executable, "-m", "webapp.stack", "exec", "--throwaway", "--",
         sys.executable, "-c", "import time; time.sleep(300)"],
        cwd=BASE_DIR, env=env, start_new_session=True,
    )  # fmt: skip
    postmaster = data_dir / "postgres" / "postmaster.pid"
    deadline = time.monotonic() + 60
    while not (postmaster.exists() and (data_dir / "run" / "redis.sock").exists()):
        assert time.monotonic() < deadline, "the embedded services did not start"
        assert launcher.poll() is None, "the launcher exited early"
        time.sleep(0.1)
    time.sleep(0.5)  # services.json written: the command is running
    postgres_pid = int(postmaster.read_text().split()[0])
    redis_pids = [
        int(line.split()[0])
        for line in subprocess.run(
            ["pgrep", "-af", "redis-server"], capture_output=True, text=True
        ).stdout.splitlines()
        if str(data_dir) in line
    ]
    assert _alive(postgres_pid) and redis_pids

    launcher.send_signal(signal.SIGTERM)

    assert launcher.wait(60) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 30
    while _alive(postgres_pid) or any(_alive(pid) for pid in redis_pids):
        assert time.monotonic() < deadline, "embedded PostgreSQL or Redis outlived the launcher"
        time.sleep(0.2)
    assert not data_dir.exists()  # the throw-away data directory is removed as well


def test_a_throwaway_run_refuses_a_data_directory_holding_someone_elses_files(
    tmp_path: Path,
) -> None:
    # `make test` runs with --throwaway, which deletes its data directory at the end: a
    # retailer's VITRINE_DATA_DIR exported in the shell must survive it.
    data_dir = tmp_path / "data"
    (data_dir / "media").mkdir(parents=True)
    (data_dir / "media" / "photo.jpg").write_bytes(b"a retailer's photo")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env["VITRINE_DATA_DIR"] = str(data_dir)

    refused = subprocess.run(
        [sys.executable, "-m", "webapp.stack", "exec", "--throwaway", "--", "true"],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert refused.returncode == 2
    assert "refusing" in refused.stdout and str(data_dir) in refused.stdout
    assert (data_dir / "media" / "photo.jpg").read_bytes() == b"a retailer's photo"
    assert not (data_dir / "postgres").exists()  # nothing was started in it
