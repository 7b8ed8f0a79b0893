"""Many shoppers at once against a running stack: requests/s, latency per kind, errors.

    python bench/load.py --url http://127.0.0.1:8112 --shoppers 50 --duration 60 \\
        --photos ../shared/datasets/clothing/images --words ../shared/datasets/hm/articles.csv

Each simulated shopper is a closed loop (the next request leaves when the last answer came
back) over the shopper pages, in the mix 40% text search (``GET /search/?q=``), 30% photo
search (``POST /search/photo/`` then its results page) and 30% similar items
(``GET /products/<sku>/similar/``). Every shopper sends its own ``X-Forwarded-For``
address, as a reverse proxy would: start the stack with ``VITRINE_TRUSTED_PROXIES=127.0.0.1``
so each shopper has its own rate limits (without it they all share 127.0.0.1's, and the
per-client limits answer 429, which counts as an error here). The catalog must have
products with vectors (import some first; the SKUs for "similar items" are read from the
text results).

Any answer other than 2xx/3xx, and any transport error, is an error; the run ends with a
non-zero status when there was one. Figures go to ``bench/results/load.json``.

The load generator is built to grow: ``Scenario`` says what a shopper does (kinds,
weights, one function per kind), and ``run_closed`` is one driver of it; an open-loop
driver (arrivals at a fixed rate, for saturation curves) would be another function over
the same ``Scenario`` and ``Recorder``.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

RESULTS = Path(__file__).resolve().parent / "results"
SKU_LINK = re.compile(r'href="/products/([^/"]+)/"')
CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@dataclass
class Sample:
    kind: str
    seconds: float
    ok: bool
    detail: str = ""


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
        total = len(self.samples)
        return {
            "requests": total,
            "errors": sum(1 for s in self.samples if not s.ok),
            "requests_per_second": round(total / wall_seconds, 1) if wall_seconds else 0.0,
            "all": percentiles([s.seconds for s in self.samples if s.ok]),
            "kinds": kinds,
        }


Action = Callable[[httpx.Client, random.Random], None]


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


def shopper_scenario(*, words: list[str], photos: list[bytes], skus: list[str]) -> Scenario:
    def text(client: httpx.Client, rng: random.Random) -> None:
        _check(client.get("/search/", params={"q": rng.choice(words)}), 200)

    def photo(client: httpx.Client, rng: random.Random) -> None:
        # The form's CSRF token, as a browser has it from the page it uploads from.
        token = _csrf_tokens.get(id(client)) or _csrf_token(client)
        upload = client.post(
            "/search/photo/",
            data={"csrfmiddlewaretoken": token},
            files={"image": ("photo.jpg", rng.choice(photos), "image/jpeg")},
        )
        location = _check(upload, 302).headers["Location"]
        _check(client.get(location), 200)

    def similar(client: httpx.Client, rng: random.Random) -> None:
        _check(client.get(f"/products/{rng.choice(skus)}/similar/"), 200)

    return Scenario(
        actions={"text": text, "photo": photo, "similar": similar},
        weights={"text": 0.4, "photo": 0.3, "similar": 0.3},
    )


_csrf_tokens: dict[int, str] = {}  # per shopper's client (each thread has its own)


def _csrf_token(client: httpx.Client) -> str:
    match = CSRF_FIELD.search(_check(client.get("/"), 200).text)
    if match is None:
        raise RequestFailed("no CSRF token on the home page")
    _csrf_tokens[id(client)] = match.group(1)
    return match.group(1)


def run_closed(
    *, url: str, scenario: Scenario, shoppers: int, duration: float, warmup: float, seed: int
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
        headers = {"X-Forwarded-For": f"10.{number // 250}.{number % 250}.{rng.randint(1, 250)}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60.0) as client:
            start.wait()
            while time.monotonic() < stop_at:
                kind, action = scenario.pick(rng)
                recording = time.monotonic() >= warm_until
                began = time.perf_counter()
                try:
                    action(client, rng)
                except (RequestFailed, httpx.HTTPError) as error:
                    sample = Sample(kind, time.perf_counter() - began, False, str(error))
                else:
                    sample = Sample(kind, time.perf_counter() - began, True)
                if recording:
                    recorder.add(sample)

    threads = [threading.Thread(target=shopper, args=(n,), daemon=True) for n in range(shoppers)]
    for thread in threads:
        thread.start()
    start.wait()
    for thread in threads:
        thread.join()
    return recorder, time.monotonic() - warm_until


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--shoppers", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds not recorded")
    parser.add_argument("--photos", type=Path)
    parser.add_argument("--words", type=Path, help="H&M-style articles.csv for query words")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--out", type=Path, default=RESULTS / "load.json")
    args = parser.parse_args(argv)

    words = _words(args.words)
    scenario = shopper_scenario(
        words=words, photos=_photos(args.photos), skus=_skus(args.url, words)
    )
    recorder, wall = run_closed(
        url=args.url, scenario=scenario, shoppers=args.shoppers, duration=args.duration,
        warmup=args.warmup, seed=args.seed,
    )  # fmt: skip
    summary = {
        "mode": "closed",
        "shoppers": args.shoppers,
        "duration_s": round(wall, 1),
        "mix": scenario.weights,
        **recorder.summary(wall_seconds=wall),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
