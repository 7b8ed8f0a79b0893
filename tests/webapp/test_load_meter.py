"""bench/load.py's CPU meter finds a web server's whole process family."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import psutil
from django.conf import settings

# A master listening on a port and two forked workers sharing its socket, as gunicorn runs.
SERVER = """
import os, socket, time
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
for _ in range(2):
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)
print(listener.getsockname()[1], flush=True)
time.sleep(60)
"""


def _load_bench() -> ModuleType:
    path = Path(settings.BASE_DIR) / "bench" / "load.py"
    spec = importlib.util.spec_from_file_location("bench_load", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_meter_counts_the_master_and_every_worker_sharing_its_socket() -> None:
    load = _load_bench()
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        roots = load._server_processes(f"http://127.0.0.1:{port}")
        # The socket table names one holder, often a worker: counting that one alone left
        # the other workers' CPU out of "web CPU per request".
        assert [root.pid for root in roots] == [server.pid]
        assert len(roots[0].children()) == 2
    finally:
        for child in psutil.Process(server.pid).children():
            child.kill()
        server.kill()
        server.wait()
