"""A real local HTTP server standing in for retailers' image hosts and feed URLs.

Nothing here mocks the fetcher: requests travel over TCP to this server, which records
every request it receives so tests can prove that a refused URL was never contacted.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.factories import photo_plain

# Worker subprocesses (the session's ``celery_worker_process`` included) copy this process's
# environment when they start, and their image fetches must reach the local server below,
# which tests name as "localhost". Set here, at collection, so it precedes every worker
# start; the test process itself is configured per test through the ``settings`` fixture.
os.environ.setdefault("VITRINE_FETCH_ALLOWED_HOSTS", "localhost")

Route = Callable[[BaseHTTPRequestHandler, dict[str, list[str]]], None]


def media_for_local_fetches(settings: Any, tmp_path: Path, *, deadline: float = 1.5) -> Path:
    """Stored images under `tmp_path/media`, and the fetcher allowed to reach the local test
    server ("localhost", a private address) with a short deadline."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.VITRINE_FETCH_ALLOWED_HOSTS = ["localhost"]
    settings.VITRINE_FETCH_DEADLINE_SECONDS = deadline
    return tmp_path / "media"


def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@dataclass
class LocalServer:
    port: int
    hits: Counter[str] = field(default_factory=Counter)
    routes: dict[str, Route] = field(default_factory=dict)
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def add_file(self, path: str, body: bytes, content_type: str = "image/jpeg") -> None:
        self.files[path] = (body, content_type)


def _default_routes(server: LocalServer) -> dict[str, Route]:
    def redirect(handler: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> None:
        handler.send_response(int(query.get("code", ["302"])[0]))
        handler.send_header("Location", query["to"][0])
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def loop(handler: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> None:
        handler.send_response(302)
        handler.send_header("Location", "/loop")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def big(handler: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> None:
        size = int(query.get("size", [str(5 * 1024 * 1024)])[0])
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Content-Length", str(size))
        handler.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            handler.wfile.write(b"\0" * size)

    def big_chunked(handler: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> None:
        # No Content-Length: the cap must be enforced on the bytes actually read.
        handler.protocol_version = "HTTP/1.1"
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        chunk = b"\0" * 65536
        try:
            for _ in range(200):
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            handler.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def slow_headers(handler: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> None:
        time.sleep(float(query.get("delay", ["5"])[0]))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            _send(handler, 200, photo_plain(), "image/jpeg")

    def drip(handler: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> None:
        # Each byte arrives well within any per-read timeout; only a total deadline stops it.
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        try:
            for _ in range(100000):
                handler.wfile.write(b"x")
                handler.wfile.flush()
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def status(handler: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> None:
        _send(handler, int(query["code"][0]), b"nope", "text/plain")

    return {
        "/redirect": redirect,
        "/loop": loop,
        "/big": big,
        "/big-chunked": big_chunked,
        "/slow-headers": slow_headers,
        "/drip": drip,
        "/status": status,
    }


@pytest.fixture
def http_server() -> Iterator[LocalServer]:
    state = LocalServer(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            state.hits[parts.path] += 1
            if parts.path in state.files:
                body, content_type = state.files[parts.path]
                _send(self, 200, body, content_type)
                return
            route = state.routes.get(parts.path)
            if route is None:
                _send(self, 404, b"not found", "text/plain")
                return
            route(self, parse_qs(parts.query))

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    state.routes.update(_default_routes(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
