"""The web server as `make run` starts it: sized to the machine, one BLAS thread a process."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.processes import BASE_DIR, subprocess_environment
from webapp.stack import WEB_THREADS, web_server_size


def test_gunicorn_runs_a_process_per_usable_core() -> None:
    assert web_server_size(2) == (2, WEB_THREADS)
    assert web_server_size(8) == (8, WEB_THREADS)
    assert web_server_size(1) == (2, WEB_THREADS)  # one process restarting leaves one serving
    usable = len(os.sched_getaffinity(0))
    assert web_server_size() == web_server_size(usable)


def test_a_web_process_runs_numpy_with_one_blas_thread() -> None:
    environment = {
        k: v
        for k, v in subprocess_environment().items()
        if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    }
    code = (
        "from webapp.wsgi import application\n"
        "import numpy, threadpoolctl\n"
        "pools = threadpoolctl.threadpool_info()\n"
        "print('THREADS=' + ','.join(str(p['num_threads']) for p in pools))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env=environment, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    counts = result.stdout.split("THREADS=")[1].strip().split(",")
    assert counts and set(counts) == {"1"}, result.stdout
