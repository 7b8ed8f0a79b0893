"""The SSRF matrix: every refused URL is refused before any connection is made."""

from __future__ import annotations

import contextlib
import gzip
import time
import tracemalloc
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

import pytest

from catalog.ingest.fetching import (
    BlockedURLError,
    FetchPolicy,
    FetchTimeoutError,
    HTTPStatusError,
    NetworkError,
    ResponseTooLargeError,
    SafeFetcher,
    StaticResolver,
    TooManyRedirectsError,
    UnsupportedEncodingError,
)
from tests.factories import photo_plain
from tests.ingest.conftest import LocalServer, Route
from tests.support.hostile import gzip_bomb

# Names the tests resolve without DNS. "public.test" plays a public image host: it is
# allowed (like the setting would allow a test host) and lands on the local server.
RESOLVER = StaticResolver(
    {
        "public.test": ["127.0.0.1"],
        "private.test": ["127.0.0.1"],
        "metadata.test": ["169.254.169.254"],
        "intranet.test": ["10.1.2.3"],
        "rebind.test": ["93.184.216.34", "127.0.0.1"],
        "mapped.test": ["::ffff:127.0.0.1"],
    }
)


class Fetcher:
    """A SafeFetcher that records every TCP connect it attempts."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.connects: list[tuple[str, str, int]] = []
        self.fetcher = SafeFetcher(
            policy,
            resolver=RESOLVER,
            observer=lambda host, ip, port: self.connects.append((host, ip, port)),
        )

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fetcher.close()


@pytest.fixture
def fetcher() -> Fetcher:
    return Fetcher(FetchPolicy(allowed_hosts=frozenset({"public.test"}), deadline=3.0))


def test_fetches_an_image_from_an_allowed_test_host(
    http_server: LocalServer, fetcher: Fetcher
) -> None:
    body = photo_plain()
    http_server.add_file("/a.jpg", body)
    with fetcher:
        result = fetcher.fetcher.fetch(http_server.url("/a.jpg", host="public.test"))
    assert result.content == body
    assert result.content_type == "image/jpeg"
    assert fetcher.connects == [("public.test", "127.0.0.1", http_server.port)]


def test_refuses_loopback_with_the_default_policy(http_server: LocalServer) -> None:
    http_server.add_file("/a.jpg", photo_plain())
    with SafeFetcher() as fetcher, pytest.raises(BlockedURLError, match="loopback"):
        fetcher.fetch(http_server.url("/a.jpg"))
    assert http_server.hits["/a.jpg"] == 0


BLOCKED = [
    ("http://127.0.0.1:{port}/a.jpg", "loopback"),
    ("http://localhost:{port}/a.jpg", "loopback"),
    ("http://127.1:{port}/a.jpg", "loopback"),
    ("http://2130706433:{port}/a.jpg", "loopback"),  # 127.0.0.1 as one decimal number
    ("http://0x7f000001:{port}/a.jpg", "loopback"),  # ... and as hex
    ("http://0177.0.0.1:{port}/a.jpg", "not a valid URL|loopback"),  # ... and octal
    ("http://0.0.0.0:{port}/a.jpg", "unspecified"),
    ("http://[::1]:{port}/a.jpg", "loopback"),
    ("http://[::ffff:127.0.0.1]:{port}/a.jpg", "IPv4-mapped loopback"),
    ("http://[::ffff:7f00:1]:{port}/a.jpg", "IPv4-mapped loopback"),
    ("http://mapped.test:{port}/a.jpg", "IPv4-mapped loopback"),
    ("http://private.test:{port}/a.jpg", "loopback"),
    ("http://10.0.0.1/a.jpg", "private"),
    ("http://172.16.5.4/a.jpg", "private"),
    ("http://192.168.1.1/a.jpg", "private"),
    ("http://100.64.0.1/a.jpg", "non-public"),  # carrier-grade NAT
    ("http://intranet.test/a.jpg", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://metadata.test/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/a.jpg", "link-local"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "private"),  # AWS IPv6 metadata
    ("http://[::ffff:169.254.169.254]/", "IPv4-mapped link-local"),
    ("http://[64:ff9b::a9fe:a9fe]/", "IPv6 form of a link-local"),  # NAT64 of metadata
    ("http://[2002:7f00:1::]/", "IPv6 form of a loopback"),  # 6to4 of 127.0.0.1
    ("http://[ff02::1]/", "multicast"),
    ("http://rebind.test:{port}/a.jpg", "loopback"),  # one public + one private answer
]


@pytest.mark.parametrize(("template", "reason"), BLOCKED)
def test_refuses_non_public_addresses_without_connecting(
    http_server: LocalServer, fetcher: Fetcher, template: str, reason: str
) -> None:
    http_server.add_file("/a.jpg", photo_plain())
    with fetcher, pytest.raises(BlockedURLError, match=reason):
        fetcher.fetcher.fetch(template.format(port=http_server.port))
    assert fetcher.connects == []
    assert sum(http_server.hits.values()) == 0


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "only http and https"),
        ("ftp://public.test/a.jpg", "only http and https"),
        ("gopher://public.test:70/_x", "only http and https"),
        ("//public.test/a.jpg", "only http and https"),
        ("http://user:secret@public.test/a.jpg", "credentials"),
        ("http:///a.jpg", "no host"),
    ],
)
def test_refuses_other_schemes_and_malformed_urls(fetcher: Fetcher, url: str, reason: str) -> None:
    with fetcher, pytest.raises(BlockedURLError, match=reason):
        fetcher.fetcher.fetch(url)
    assert fetcher.connects == []


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/a.jpg",
        "http://private.test:{port}/a.jpg",
        "http://[::ffff:127.0.0.1]:{port}/a.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
    ],
)
def test_a_public_host_redirecting_to_a_private_one_is_refused(
    http_server: LocalServer, fetcher: Fetcher, target: str
) -> None:
    http_server.add_file("/a.jpg", photo_plain())
    to = target.format(port=http_server.port)
    with fetcher, pytest.raises(BlockedURLError):
        fetcher.fetcher.fetch(http_server.url(f"/redirect?to={to}", host="public.test"))
    assert http_server.hits["/redirect"] == 1
    assert http_server.hits["/a.jpg"] == 0
    # Only the first hop (the allowed host) was ever connected to.
    assert {c[0] for c in fetcher.connects} == {"public.test"}


def test_redirects_between_allowed_hosts_are_followed(
    http_server: LocalServer, fetcher: Fetcher
) -> None:
    http_server.add_file("/a.jpg", photo_plain())
    with fetcher:
        result = fetcher.fetcher.fetch(
            http_server.url("/redirect?to=/a.jpg&code=301", host="public.test")
        )
    assert result.final_url.endswith("/a.jpg")
    assert len(result.hops) == 2


def test_redirect_loops_stop(http_server: LocalServer, fetcher: Fetcher) -> None:
    with fetcher, pytest.raises(TooManyRedirectsError):
        fetcher.fetcher.fetch(http_server.url("/loop", host="public.test"))
    assert http_server.hits["/loop"] == fetcher.fetcher.policy.max_redirects + 1


def test_a_declared_oversize_body_is_refused_before_reading(http_server: LocalServer) -> None:
    policy = FetchPolicy(allowed_hosts=frozenset({"public.test"}), max_bytes=1_000_000)
    with (
        SafeFetcher(policy, resolver=RESOLVER) as fetcher,
        pytest.raises(ResponseTooLargeError, match="limit is 1,000,000"),
    ):
        fetcher.fetch(http_server.url("/big?size=5000000", host="public.test"))


def test_an_undeclared_oversize_body_is_cut_off(http_server: LocalServer) -> None:
    policy = FetchPolicy(allowed_hosts=frozenset({"public.test"}), max_bytes=1_000_000)
    with (
        SafeFetcher(policy, resolver=RESOLVER) as fetcher,
        pytest.raises(ResponseTooLargeError, match="over the 1,000,000 byte limit"),
    ):
        fetcher.fetch(http_server.url("/big-chunked", host="public.test"))


@pytest.mark.parametrize("path", ["/slow-headers?delay=5", "/drip"])
def test_slow_responses_hit_the_total_deadline(http_server: LocalServer, path: str) -> None:
    policy = FetchPolicy(allowed_hosts=frozenset({"public.test"}), deadline=1.0)
    started = time.monotonic()
    with (
        SafeFetcher(policy, resolver=RESOLVER) as fetcher,
        pytest.raises(FetchTimeoutError) as info,
    ):
        fetcher.fetch(http_server.url(path, host="public.test"))
    assert time.monotonic() - started < 2.5
    assert info.value.retryable


def test_http_errors_say_whether_a_retry_can_help(
    http_server: LocalServer, fetcher: Fetcher
) -> None:
    with fetcher:
        with pytest.raises(HTTPStatusError, match="HTTP 404") as not_found:
            fetcher.fetcher.fetch(http_server.url("/nothing-here", host="public.test"))
        with pytest.raises(HTTPStatusError, match="HTTP 503") as unavailable:
            fetcher.fetcher.fetch(http_server.url("/status?code=503", host="public.test"))
    assert not not_found.value.retryable
    assert unavailable.value.retryable


def test_a_refused_connection_is_a_retryable_network_error() -> None:
    # Port 9 on an allowed loopback name: nothing listens there.
    policy = FetchPolicy(allowed_hosts=frozenset({"public.test"}), deadline=3.0)
    with SafeFetcher(policy, resolver=RESOLVER) as fetcher, pytest.raises(NetworkError) as info:
        fetcher.fetch("http://public.test:9/a.jpg")
    assert info.value.retryable


def _encoded_route(body: bytes, encoding: str) -> Route:
    def route(handler: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Content-Encoding", encoding)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            handler.wfile.write(body)

    return route


def _raw_deflate(data: bytes) -> bytes:
    # Many servers send "deflate" without the zlib wrapper the RFC asks for.
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return raw.compress(data) + raw.flush()


def _capped_fetcher(max_bytes: int = 1_000_000) -> SafeFetcher:
    policy = FetchPolicy(allowed_hosts=frozenset({"public.test"}), max_bytes=max_bytes)
    return SafeFetcher(policy, resolver=RESOLVER)


@pytest.mark.parametrize("layers", [1, 2])
def test_a_compression_bomb_stops_at_the_cap_without_inflating_in_memory(
    http_server: LocalServer, layers: int
) -> None:
    # 256 MB of zeros in a few kilobytes (the audit's was 3,477 bytes for gigabytes).
    bomb = gzip_bomb(decoded_bytes=256 * 1024 * 1024, layers=layers)
    assert len(bomb) < 300_000
    encoding = ", ".join(["gzip"] * layers)
    http_server.routes["/bomb"] = _encoded_route(bomb, encoding)
    tracemalloc.start()
    try:
        with (
            _capped_fetcher() as fetcher,
            pytest.raises((ResponseTooLargeError, UnsupportedEncodingError)),
        ):
            fetcher.fetch(http_server.url("/bomb", host="public.test"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"peak {peak:,} bytes while refusing a bomb"


def test_stacked_and_unknown_encodings_are_refused(http_server: LocalServer) -> None:
    body = photo_plain()
    http_server.routes["/double"] = _encoded_route(gzip.compress(gzip.compress(body)), "gzip, gzip")
    http_server.routes["/br"] = _encoded_route(body, "br")
    with _capped_fetcher() as fetcher:
        with pytest.raises(UnsupportedEncodingError, match="stacked"):
            fetcher.fetch(http_server.url("/double", host="public.test"))
        with pytest.raises(UnsupportedEncodingError, match="'br'"):
            fetcher.fetch(http_server.url("/br", host="public.test"))


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", _raw_deflate),
        ("identity", lambda data: data),
    ],
)
def test_one_layer_of_gzip_or_deflate_is_decoded(
    http_server: LocalServer, encoding: str, encode: Callable[[bytes], bytes]
) -> None:
    body = photo_plain()
    http_server.routes["/enc"] = _encoded_route(encode(body), encoding)
    with _capped_fetcher() as fetcher:
        assert fetcher.fetch(http_server.url("/enc", host="public.test")).content == body


def test_a_body_that_decodes_past_the_cap_is_refused(http_server: LocalServer) -> None:
    http_server.routes["/zeros"] = _encoded_route(gzip.compress(b"\0" * 2_000_000), "gzip")
    with (
        _capped_fetcher() as fetcher,
        pytest.raises(ResponseTooLargeError, match="decodes to over the 1,000,000 byte limit"),
    ):
        fetcher.fetch(http_server.url("/zeros", host="public.test"))
