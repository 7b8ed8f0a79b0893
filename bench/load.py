"""Many shoppers at once against running stacks: requests/s, latency per kind, errors.

    python bench/load.py --url http://127.0.0.1:8112 --shoppers 50 --duration 60 \\
        --photos ../shared/datasets/clothing/images --words ../shared/datasets/hm/articles.csv

    # before and after in one window: each phase runs against each server in turn
    python bench/load.py --url before=http://127.0.0.1:8172 --url after=http://127.0.0.1:8171 \\
        --shoppers 50 --shoppers 20 --rates 30,60,90 --rounds 2 ...

A shopper's request is one of the mix: 40% text search (``GET /search/?q=``), 30% photo
search (``POST /search/photo/``, its results page, then the photo's hotspot layer when the
page asks for it, as the browser does: one request of the shopper, up to three HTTP
requests; the time its results were on screen is recorded beside it as
``photo (results shown)``) and 30% similar items (``GET /products/<sku>/similar/``).

Every photo a shopper sends is new to the server, as in a shop: each upload of one of the
``--photos`` gets a unique JPEG comment, so no vector, region or result is cached for it.
``--repeat-photos`` sends 64 photos as they are, each searched once before the run (this
bench's behaviour before, and what earlier rows of the README measured).

Two drivers:

- closed loop (``--shoppers N``, repeatable): N shoppers, each sending its next request when
  the last answer came back. With enough shoppers the server is saturated, and requests/s
  is its capacity; latencies then are mostly queueing (about shoppers / requests/s).
- open loop (``--rates R1,R2,...``): requests arrive at R per second (Poisson), whatever
  the answers' pace, each from one of the shoppers at random. Latency counts from the
  planned arrival, so a server that falls behind shows it (no coordinated omission);
  arrivals the client could not send by the end are errors.

With several ``--url NAME=URL`` every phase runs against each server in turn, so a
baseline and a change share the machine's load; the load average is recorded per phase.

Every shopper sends its own ``X-Forwarded-For`` address, as a reverse proxy would: start
the stack with ``VITRINE_TRUSTED_PROXIES=127.0.0.1`` so each shopper has its own rate
limits (without it they all share 127.0.0.1's, and the per-client limits answer 429, which
counts as an error here). A shopper of this bench sends a request as soon as the last one
came back, far faster than a person: at saturation each sends more photos a minute than
``VITRINE_PAGE_PHOTO_RATE`` allows one client, so measure capacity with the page limits
raised (``VITRINE_PAGE_PHOTO_RATE=6000/min VITRINE_PAGE_SEARCH_RATE=60000/min``).
The catalog must have products with vectors (import some first; the SKUs for "similar
items" are read from the text results).

Any answer other than 2xx/3xx, and any transport error, is an error; the run ends with a
non-zero status when there was one. Figures go to ``bench/results/load.json``.

``Scenario`` says what a shopper does (kinds, weights, one function per kind);
``run_closed`` and ``run_open`` drive it and fill a ``Recorder``.
"""

from __future__ import annotations

import argparse
import csv
import html
import itertools
import json
import os
import random
import re
import statistics
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

RESULTS = Path(__file__).resolve().parent / "results"
SKU_LINK = re.compile(r'href="/products/([^/"]+)/"')
#: The results page's hotspot layer still to fetch (search/_hotspots.html's placeholder)
HOTSPOT_LAYER = re.compile(r'hx-get="(/search/photos/[^"]+/hotspots/[^"]*)"\s+hx-trigger="[^"]*"')
CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@dataclass
class Sample:
    kind: str
    seconds: float
    ok: bool
    detail: str = ""
    #: a moment within a shopper's request (its results shown), not a request of its own
    part: bool = False


@dataclass
class Recorder:
    """Every request's outcome, shared by the shoppers' threads."""

    samples: list[Sample] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sample: Sample) -> None:
        with self.lock:
            self.samples.append(sample)

    def summary(self, *, wall_seconds: float) -> dict[str, Any]:
        def percentiles(values: list[float]) -> dict[str, float]:
            if not values:
                return {}
            ordered = sorted(values)

            def at(share: float) -> float:
                return round(1000 * ordered[min(len(ordered) - 1, int(share * len(ordered)))], 1)

            return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99),
                    "mean_ms": round(1000 * statistics.fmean(ordered), 1)}  # fmt: skip

        kinds: dict[str, Any] = {}
        for kind in sorted({s.kind for s in self.samples}):
            mine = [s for s in self.samples if s.kind == kind]
            errors = [s for s in mine if not s.ok]
            kinds[kind] = {
                "requests": len(mine),
                "errors": len(errors),
                "error_examples": sorted({e.detail for e in errors})[:5],
                **percentiles([s.seconds for s in mine if s.ok]),
            }
        requests = [s for s in self.samples if not s.part]
        return {
            "requests": len(requests),
            "errors": sum(1 for s in requests if not s.ok),
            "requests_per_second": round(len(requests) / wall_seconds, 1) if wall_seconds else 0.0,
            "all": percentiles([s.seconds for s in requests if s.ok]),
            "kinds": kinds,
        }


#: One shopper request; it may return the seconds (from its start) to moments within it.
Action = Callable[[httpx.Client, random.Random], "dict[str, float] | None"]


def _parts(kind: str, parts: dict[str, float] | None, *, offset: float = 0.0) -> list[Sample]:
    return [
        Sample(f"{kind} ({name})", offset + t, True, part=True) for name, t in (parts or {}).items()
    ]


@dataclass
class Scenario:
    """What one shopper does: a weighted choice among kinds of request."""

    actions: dict[str, Action]
    weights: dict[str, float]

    def pick(self, rng: random.Random) -> tuple[str, Action]:
        kinds = list(self.weights)
        kind = rng.choices(kinds, weights=[self.weights[k] for k in kinds])[0]
        return kind, self.actions[kind]


class RequestFailed(Exception):
    pass


def _check(response: httpx.Response, *allowed: int) -> httpx.Response:
    if response.status_code not in allowed:
        raise RequestFailed(f"HTTP {response.status_code} {response.request.url.path}")
    return response


def shopper_scenario(
    *, words: list[str], photos: list[bytes], skus: list[str], new_photos: bool = True
) -> Scenario:
    uploads = itertools.count()

    def text(client: httpx.Client, rng: random.Random) -> None:
        _check(client.get("/search/", params={"q": rng.choice(words)}), 200)

    def photo(client: httpx.Client, rng: random.Random) -> dict[str, float]:
        began = time.perf_counter()
        data = rng.choice(photos)
        if new_photos:
            data = jpeg_with_comment(data, f"vitrine-load {next(uploads)} {rng.random()}")
        # The form's CSRF token, as a browser has it from the page it uploads from.
        token = _csrf_tokens.get(client) or _csrf_token(client)
        upload = client.post(
            "/search/photo/",
            data={"csrfmiddlewaretoken": token},
            files={"image": ("photo.jpg", data, "image/jpeg")},
        )
        location = _check(upload, 302).headers["Location"]
        page = _check(client.get(location), 200).text
        shown = time.perf_counter() - began
        layer = HOTSPOT_LAYER.search(page)
        for _ in range(3):  # the layer asks again in 2 s while the shopper's slot is busy
            if layer is None:
                break
            if "delay:2s" in layer.group(0):
                time.sleep(2)
            page = _check(client.get(html.unescape(layer.group(1))), 200).text
            layer = HOTSPOT_LAYER.search(page)
        return {"results shown": shown}

    def similar(client: httpx.Client, rng: random.Random) -> None:
        _check(client.get(f"/products/{rng.choice(skus)}/similar/"), 200)

    return Scenario(
        actions={"text": text, "photo": photo, "similar": similar},
        weights={"text": 0.4, "photo": 0.3, "similar": 0.3},
    )


def jpeg_with_comment(data: bytes, comment: str) -> bytes:
    """The same JPEG with a comment segment after its start marker: the same pixels in new
    bytes, so the server sees a photo it never saw (ids and caches key on the bytes)."""
    if data[:2] != b"\xff\xd8":
        raise SystemExit("--photos: only JPEG photos can be made new (a comment segment)")
    text = comment.encode()
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + data[2:]


#: Per shopper's client (each thread has its own); weak, so a client of a finished phase
#: never hands its token to a new one that reuses its id (a 403 from the next server).
_csrf_tokens: weakref.WeakKeyDictionary[httpx.Client, str] = weakref.WeakKeyDictionary()


def _csrf_token(client: httpx.Client) -> str:
    match = CSRF_FIELD.search(_check(client.get("/"), 200).text)
    if match is None:
        raise RequestFailed("no CSRF token on the home page")
    _csrf_tokens[client] = match.group(1)
    return match.group(1)


def run_closed(
    *,
    url: str,
    scenario: Scenario,
    shoppers: int,
    duration: float,
    warmup: float,
    seed: int,
    meter: CpuMeter | None = None,
) -> tuple[Recorder, float]:
    """``shoppers`` threads, each sending its next request when the last one returned.

    Requests of the first ``warmup`` seconds are not recorded (each web process loads the
    model on its first query).
    """
    recorder = Recorder()
    warm_until = time.monotonic() + warmup
    stop_at = warm_until + duration
    start = threading.Barrier(shoppers + 1)

    def shopper(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        headers = _shopper_headers(number, random.Random(seed * 1000 + number))
        with httpx.Client(base_url=url, headers=headers, timeout=60.0) as client:
            start.wait()
            while time.monotonic() < stop_at:
                kind, action = scenario.pick(rng)
                recording = time.monotonic() >= warm_until
                began = time.perf_counter()
                parts: list[Sample] = []
                try:
                    parts = _parts(kind, action(client, rng))
                except (RequestFailed, httpx.HTTPError) as error:
                    sample = Sample(kind, time.perf_counter() - began, False, str(error))
                else:
                    sample = Sample(kind, time.perf_counter() - began, True)
                if recording:
                    for each in (sample, *parts):
                        recorder.add(each)

    threads = [threading.Thread(target=shopper, args=(n,), daemon=True) for n in range(shoppers)]
    for thread in threads:
        thread.start()
    start.wait()
    _meter_from(meter, warm_until)
    for thread in threads:
        thread.join()
    return recorder, time.monotonic() - warm_until


def _meter_from(meter: CpuMeter | None, moment: float) -> None:
    """Start `meter` at `moment` (the end of the warm-up)."""
    if meter is not None:
        time.sleep(max(0.0, moment - time.monotonic()))
        meter.start()


def _shopper_headers(number: int, rng: random.Random) -> dict[str, str]:
    return {"X-Forwarded-For": f"10.{number // 250}.{number % 250}.{rng.randint(1, 250)}"}


def run_open(
    *,
    url: str,
    scenario: Scenario,
    rate: float,
    shoppers: int,
    duration: float,
    warmup: float,
    seed: int,
    max_in_flight: int = 256,
    meter: CpuMeter | None = None,
) -> tuple[Recorder, float]:
    """Requests arriving at ``rate`` per second (exponential gaps) from ``shoppers`` shoppers.

    Each arrival is sent by a pool of up to ``max_in_flight`` threads; its latency counts
    from its planned arrival, so time spent waiting for a free thread (the server is
    behind) is part of it. Arrivals still unsent when the run ends are errors.
    """
    recorder = Recorder()
    rng = random.Random(seed)
    local = threading.local()
    began_at = time.monotonic()
    warm_until = began_at + warmup
    stop_at = warm_until + duration
    clients: list[httpx.Client] = []
    clients_lock = threading.Lock()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=60.0)
            with clients_lock:
                clients.append(local.client)
        return local.client  # type: ignore[no-any-return]

    def send(planned: float, kind: str, action: Action, number: int, seed_of: int) -> None:
        shopper_rng = random.Random(seed_of)
        mine = client()
        mine.headers.update(_shopper_headers(number, random.Random(seed * 1000 + number)))
        parts: list[Sample] = []
        if time.monotonic() > stop_at + 10:
            outcome = Sample(kind, time.monotonic() - planned, False, "not sent: client behind")
        else:
            sent = time.monotonic()
            try:
                parts = _parts(kind, action(mine, shopper_rng), offset=sent - planned)
            except (RequestFailed, httpx.HTTPError) as error:
                outcome = Sample(kind, time.monotonic() - planned, False, str(error))
            else:
                outcome = Sample(kind, time.monotonic() - planned, True)
        if planned >= warm_until:
            for each in (outcome, *parts):
                recorder.add(each)

    metering = threading.Thread(target=_meter_from, args=(meter, warm_until), daemon=True)
    metering.start()
    with ThreadPoolExecutor(max_workers=max_in_flight) as pool:
        planned = time.monotonic()
        while planned < stop_at:
            planned += rng.expovariate(rate)
            wait = planned - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            kind, action = scenario.pick(rng)
            number = rng.randrange(shoppers)
            pool.submit(send, planned, kind, action, number, rng.randrange(1 << 30))
    for each in clients:
        each.close()
    return recorder, duration


def _server_processes(url: str) -> list[psutil.Process]:
    """The process listening on `url`'s port (gunicorn's master, whose workers are its
    children); none when it is not on this machine."""
    port = httpx.URL(url).port or 80
    pids = {
        connection.pid
        for connection in psutil.net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
        and connection.pid
    }  # fmt: skip
    # The workers share the master's listening socket, and the system table names one of
    # its holders (often a worker alone): climb to the topmost one, whose children the
    # meter then counts. Counting one worker left the other workers' CPU out.
    roots: dict[int, psutil.Process] = {}
    for pid in pids:
        process = psutil.Process(pid)
        while (parent := process.parent()) is not None and _listens(parent, port):
            process = parent
        roots[process.pid] = process
    return list(roots.values())


def _listens(process: psutil.Process, port: int) -> bool:
    try:
        connections = process.net_connections(kind="tcp")
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections)


def _postgres_processes(data_dir: Path | None) -> list[psutil.Process]:
    """The postmaster serving `data_dir` (its backends are its children)."""
    if data_dir is None:
        return []
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if "postgres" in " ".join(command[:1]) and str(data_dir) in command:
            return [process]
    return []


def _cpu_seconds(roots: list[psutil.Process]) -> float:
    """User + system CPU seconds of `roots` and all their descendants, including those
    that exited (a parent's `children_*` times hold its reaped children's)."""
    total = 0.0
    for root in roots:
        try:
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in family:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system + times.children_user + times.children_system
    return total


@dataclass
class CpuMeter:
    """CPU seconds the web server, the database and this client spend during a phase.

    On a machine that other work keeps busy, requests/s measures the share of the cores
    this stack got; CPU per request does not depend on it, so a change's effect shows
    there even when the machine is loaded."""

    web: list[psutil.Process]
    database: list[psutil.Process]

    def start(self) -> None:
        self.began = (_cpu_seconds(self.web), _cpu_seconds(self.database), time.process_time())

    def stop(self, *, requests: int) -> dict[str, Any]:
        web, database, client = (
            _cpu_seconds(self.web) - self.began[0],
            _cpu_seconds(self.database) - self.began[1],
            time.process_time() - self.began[2],
        )
        per = 1000.0 / max(requests, 1)
        server_ms = (web + database) * per
        return {
            "cpu_s": {"web": round(web, 1), "database": round(database, 1),
                      "client": round(client, 1)},
            "cpu_ms_per_request": {"web": round(web * per, 1),
                                   "database": round(database * per, 1),
                                   "client": round(client * per, 1)},
            # What the cores could serve with nothing else on them, client excluded.
            "requests_per_second_per_idle_core": (
                round(1000.0 / server_ms, 1) if server_ms else None
            ),
        }  # fmt: skip


def _load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def _words(path: Path | None, limit: int = 500) -> list[str]:
    if path is None:
        return ["red dress", "black jeans", "white sneakers", "striped shirt", "wool coat",
                "summer skirt", "leather bag", "blue sweater", "denim jacket", "socks"]  # fmt: skip
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        names = [
            " ".join(filter(None, [row.get("colour_group_name"), row.get("product_type_name")]))
            or row.get("prod_name", "")
            for _, row in zip(range(limit * 4), reader, strict=False)
        ]
    return sorted({n.lower() for n in names if n})[:limit]


def _photos(folder: Path | None, limit: int = 64) -> list[bytes]:
    if folder is None:
        raise SystemExit("--photos: a folder of JPEG photos to search with is needed")
    files = sorted(folder.rglob("*.jpg"))[:limit]
    if not files:
        raise SystemExit(f"no .jpg files under {folder}")
    return [f.read_bytes() for f in files]


def _photos_seen(url: str, photos: list[bytes], *, threads: int = 4) -> float:
    """Search each photo once (its item regions are then cached, for every server of the same
    stack): a shopper's photo is new once, and a 64-photo bench would otherwise measure
    mostly those first looks in its first minute. Returns the seconds it took."""
    began = time.monotonic()
    scenario = shopper_scenario(words=["warm"], photos=photos, skus=["-"])

    def look(number: int) -> None:
        with httpx.Client(base_url=url, timeout=300.0) as client:
            client.headers.update(_shopper_headers(250 + number, random.Random(number)))
            for index in range(number, len(photos), threads):
                scenario.actions["photo"](client, _Nth(index))

    workers = [threading.Thread(target=look, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.monotonic() - began


class _Nth(random.Random):
    """A `random.Random` whose `choice` picks the nth item (to visit each photo once)."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index

    def choice(self, seq: Any) -> Any:
        return seq[self.index % len(seq)]


def _skus(url: str, words: list[str]) -> list[str]:
    found: set[str] = set()
    with httpx.Client(base_url=url, timeout=60.0) as client:
        for n, word in enumerate(words[:20]):
            page = client.get(
                "/search/", params={"q": word}, headers={"X-Forwarded-For": f"10.255.0.{n + 1}"}
            )
            found.update(SKU_LINK.findall(page.text))
    if not found:
        raise SystemExit("no products found by text search: import a catalog first")
    return sorted(found)


def _target(value: str) -> tuple[str, str]:
    name, _, url = value.rpartition("=")
    return (name or url), url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", action="append", type=_target, help="[NAME=]URL of a server; repeat to compare"
    )
    parser.add_argument("--shoppers", type=int, action="append", help="closed loop; repeatable")
    parser.add_argument("--rates", default="", help="open loop: comma-separated requests/s")
    parser.add_argument(
        "--open-shoppers", type=int, default=1000, help="open loop: distinct shoppers"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of each phase")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds not recorded")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the phases")
    parser.add_argument("--photos", type=Path)
    parser.add_argument(
        "--repeat-photos", action="store_true",
        help="send 64 photos as they are, each searched once first (cached), not new ones",
    )  # fmt: skip
    parser.add_argument("--words", type=Path, help="H&M-style articles.csv for query words")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--note", default="", help="what else ran on the machine")
    parser.add_argument(
        "--postgres-data", type=Path, help="the stack's PostgreSQL data folder (its CPU is counted)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "load.json")
    args = parser.parse_args(argv)
    targets = args.url or [("server", "http://127.0.0.1:8000")]
    shoppers = args.shoppers or ([] if args.rates else [50])
    rates = [float(rate) for rate in args.rates.split(",") if rate.strip()]

    words = _words(args.words)
    photos = _photos(args.photos)
    skus = _skus(targets[0][1], words)
    scenario = shopper_scenario(
        words=words, photos=photos, skus=skus, new_photos=not args.repeat_photos
    )
    photos_seen_s = _photos_seen(targets[0][1], photos) if args.repeat_photos else 0.0
    phases: list[dict[str, Any]] = []
    for round_number in range(args.rounds):
        plan = [("closed", float(n)) for n in shoppers] + [("open", rate) for rate in rates]
        for mode, amount in plan:
            for name, url in targets:
                before = _load_average()
                meter = CpuMeter(_server_processes(url), _postgres_processes(args.postgres_data))
                if mode == "closed":
                    recorder, wall = run_closed(
                        meter=meter,
                        url=url, scenario=scenario, shoppers=int(amount), duration=args.duration,
                        warmup=args.warmup, seed=args.seed + round_number,
                    )  # fmt: skip
                else:
                    recorder, wall = run_open(
                        meter=meter, url=url, scenario=scenario, rate=amount,
                        shoppers=args.open_shoppers, duration=args.duration, warmup=args.warmup,
                        seed=args.seed + round_number,
                    )  # fmt: skip
                phase = {
                    "target": name,
                    "round": round_number,
                    "mode": mode,
                    **({"shoppers": int(amount)} if mode == "closed" else {"offered_rps": amount}),
                    "duration_s": round(wall, 1),
                    "load_average_before": before,
                    "load_average_after": _load_average(),
                    **recorder.summary(wall_seconds=wall),
                    **meter.stop(requests=len(recorder.samples)),
                }
                phases.append(phase)
                print(json.dumps({k: phase[k] for k in list(phase)[:9]} | {
                    "requests_per_second": phase["requests_per_second"],
                    "errors": phase["errors"], "all": phase["all"],
                    "cpu_ms_per_request": phase["cpu_ms_per_request"],
                }))  # fmt: skip
    summary = {
        "targets": dict(targets),
        "mix": scenario.weights,
        "distinct": {"words": len(words), "photos": len(photos), "skus": len(skus)},
        "photos_new_each_time": not args.repeat_photos,
        "cpus": os.cpu_count(),
        "photos_first_seen_s": round(photos_seen_s, 1),
        "note": args.note,
        "phases": phases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if any(phase["errors"] for phase in phases) else 0


if __name__ == "__main__":
    sys.exit(main())
