"""Events ingestion: acknowledged events per second, none lost, and back-pressure beyond.

Runs against a real gunicorn serving the app as `make run` does (2 workers x 4 threads)
on the database it is given (run it in a throwaway stack), with a publishable key and a
page's Origin, as the widgets send them (text/plain JSON batches):

1. sustained: client threads send batches as fast as they are answered, for each batch
   size, with the admission limit out of the way; acknowledged events/s, request latency,
   and count acknowledged = count stored (read back from PostgreSQL);
2. overload: the server restarted with VITRINE_EVENTS_MAX_PER_SECOND (default 2,000) and
   offered more than that; every batch is either acknowledged (202) or refused with 429
   and Retry-After, and the table holds exactly the acknowledged events.

Results go to bench/results/events.json.

    .venv/bin/python -m webapp.stack exec --throwaway -- .venv/bin/python bench/events.py
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
RESULTS = BASE_DIR / "bench" / "results" / "events.json"
ORIGIN = "https://www.brand.example"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(port: int, *, max_per_second: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "LOG_LEVEL": "WARNING",
        "VITRINE_EVENTS_MAX_PER_SECOND": str(max_per_second),
    }
    server = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "webapp.wsgi", "-b", f"127.0.0.1:{port}",
            "--workers", "2", "--threads", "4", "--timeout", "120",
        ],
        cwd=BASE_DIR,
        env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("gunicorn did not answer in 60 s")


def batch_body(size: int, thread: int, serial: int) -> bytes:
    session = f"bench-{thread:04d}-{serial:010d}-session"
    events = [
        {"type": "impression", "surface": "similar", "sku": f"SKU-{i}", "position": i % 12,
         "model_key": "default-v1"}
        for i in range(size)
    ]  # fmt: skip
    return json.dumps({"session_id": session, "consent": True, "events": events}).encode()


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted = 0
        self.batches_ok = 0
        self.refused_429 = 0
        self.refused_without_retry_after = 0
        self.other: dict[int, int] = {}
        self.latencies_ms: list[float] = []


def client_thread(
    *, port: int, key: str, size: int, thread: int, until: float, tally: Tally
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    path = f"/api/v1/events/?key={key}"
    headers = {"Content-Type": "text/plain", "Origin": ORIGIN}
    # Bodies made beforehand: the client shares the server's two cores, and its JSON work
    # is not what is measured.
    bodies = [batch_body(size, thread, serial) for serial in range(64)]
    serial = 0
    while time.monotonic() < until:
        body = bodies[serial % len(bodies)]
        serial += 1
        started = time.perf_counter()
        connection.request("POST", path, body=body, headers=headers)
        reply = connection.getresponse()
        content = reply.read()
        elapsed = (time.perf_counter() - started) * 1000
        with tally.lock:
            tally.latencies_ms.append(elapsed)
            if reply.status == 202:
                tally.accepted += int(json.loads(content)["accepted"])
                tally.batches_ok += 1
            elif reply.status == 429:
                tally.refused_429 += 1
                if not reply.getheader("Retry-After"):
                    tally.refused_without_retry_after += 1
            else:
                tally.other[reply.status] = tally.other.get(reply.status, 0) + 1
    connection.close()


def stored_count() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM search_event")
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def events_truncate() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE search_event")


def run_phase(*, port: int, key: str, size: int, threads: int, seconds: float) -> dict[str, Any]:
    events_truncate()
    tally = Tally()
    until = time.monotonic() + seconds
    started = time.monotonic()
    common = {"port": port, "key": key, "size": size, "until": until, "tally": tally}
    workers = [
        threading.Thread(target=client_thread, kwargs={**common, "thread": t})
        for t in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.monotonic() - started
    stored = stored_count()
    ordered = sorted(tally.latencies_ms)
    return {
        "batch_size": size,
        "client_threads": threads,
        "seconds": round(wall, 2),
        "events_acknowledged": tally.accepted,
        "events_stored": stored,
        "lost": tally.accepted - stored,
        "acknowledged_events_per_second": round(tally.accepted / wall, 1),
        "batches_acknowledged": tally.batches_ok,
        "batches_refused_429": tally.refused_429,
        "refusals_without_retry_after": tally.refused_without_retry_after,
        "other_statuses": tally.other,
        "latency_ms": {
            "p50": round(statistics.median(ordered), 1),
            "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
            "p99": round(ordered[int(0.99 * (len(ordered) - 1))], 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--batch-sizes", default="20,100")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--overload-limit", type=int, default=2000)
    parser.add_argument("--overload-threads", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from search.storefront.keys import publishable_key_create

    call_command("migrate", verbosity=0)
    key = publishable_key_create(name="bench", allowed_origins=[ORIGIN]).key
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average_before": os.getloadavg(),
        "server": "gunicorn 2 workers x 4 threads (as make run)",
    }

    port = free_port()
    server = serve(port, max_per_second=1_000_000)
    try:
        results["sustained"] = [
            run_phase(
                port=port, key=key, size=int(size), threads=args.threads, seconds=args.seconds
            )
            for size in args.batch_sizes.split(",")
        ]
    finally:
        server.terminate()
        server.wait(30)

    port = free_port()
    server = serve(port, max_per_second=args.overload_limit)
    try:
        overload = run_phase(
            port=port, key=key, size=100, threads=args.overload_threads, seconds=args.seconds
        )
        overload["admission_limit_per_second"] = args.overload_limit
        results["overload"] = overload
    finally:
        server.terminate()
        server.wait(30)
    results["load_average_after"] = os.getloadavg()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for phase in results["sustained"]:
        print(
            f"sustained, batches of {phase['batch_size']}: "
            f"{phase['acknowledged_events_per_second']:,.0f} events/s acknowledged, "
            f"{phase['events_acknowledged']} acknowledged / {phase['events_stored']} stored, "
            f"p50/p95 {phase['latency_ms']['p50']}/{phase['latency_ms']['p95']} ms"
        )
    print(
        f"overload at {args.overload_limit}/s: {overload['acknowledged_events_per_second']:,.0f} "
        f"events/s acknowledged, {overload['batches_refused_429']} batches refused with 429 "
        f"({overload['refusals_without_retry_after']} without Retry-After), "
        f"{overload['events_acknowledged']} acknowledged / {overload['events_stored']} stored"
    )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
