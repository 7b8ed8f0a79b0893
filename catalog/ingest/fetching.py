"""An HTTP fetcher that is safe to point at URLs taken from a retailer's feed.

Feeds are untrusted input: an ``image_link`` may point at ``http://169.254.169.254/``,
at a name that resolves to ``10.0.0.5``, or at a public host that redirects to either.
The fetcher therefore:

* accepts only ``http`` and ``https`` URLs, on every hop;
* resolves each host itself (through a :class:`Resolver` seam), refuses the hop unless
  *every* resolved address is public, and then connects to one of those exact addresses,
  so a DNS answer that changes between the check and the connect (rebinding) cannot
  slip a private address in: there is no second lookup;
* follows redirects by hand, re-checking scheme, host and addresses on each hop;
* enforces one deadline over the whole fetch (all hops, headers and body), a byte cap
  (declared ``Content-Length``, bytes actually received, and bytes after decoding), and a
  redirect limit;
* decodes a ``Content-Encoding`` itself, one chunk at a time with a bounded output, and
  only a single gzip or deflate layer: a server may ignore our ``identity`` request, and
  ``gzip, gzip`` turns a few kilobytes into gigabytes in a client that decodes for us.

Hosts named in ``FetchPolicy.allowed_hosts`` may resolve to non-public addresses; this
exists for tests and for a retailer's own LAN image server, and is empty by default.

The module has no Django imports: settings are turned into a :class:`FetchPolicy` by
the caller. One module over 400 lines on purpose: the one gate every fetch goes through,
reviewed as a whole.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Prefixes that carry an IPv4 address inside an IPv6 one. Python's ``is_global`` calls
# 64:ff9b::/96 (NAT64) and 2002::/16 (6to4) global, yet they reach the embedded IPv4
# address, so that address must be checked as well.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")


class FetchError(Exception):
    """A fetch that did not produce a usable body. ``reason`` is shown to retailers."""

    #: Whether trying again later could succeed (network trouble, 5xx, timeouts).
    retryable: bool = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BlockedURLError(FetchError):
    """The URL or one of its addresses is not allowed (scheme, private address...)."""


class ResponseTooLargeError(FetchError):
    """The body exceeds the byte cap."""


class UnsupportedEncodingError(FetchError):
    """A ``Content-Encoding`` we do not decode (unknown, or several stacked)."""


class FetchTimeoutError(FetchError):
    """The total deadline passed."""

    retryable = True


class TooManyRedirectsError(FetchError):
    """More redirects than the policy allows."""


class HTTPStatusError(FetchError):
    """The final response is not a 200."""

    def __init__(self, reason: str, *, status_code: int) -> None:
        super().__init__(reason)
        self.status_code = status_code
        # 408/429 and 5xx are the server's temporary trouble; other 4xx will not change.
        self.retryable = status_code in (408, 425, 429) or status_code >= 500


class NetworkError(FetchError):
    """DNS failure, refused connection, reset, TLS failure."""

    retryable = True


class Resolver(Protocol):
    """Turns a host name into the addresses to connect to."""

    def __call__(self, host: str, port: int) -> list[str]: ...


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with the operating system (``getaddrinfo``), every address family."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise NetworkError(f"could not resolve host {host!r}") from exc
    # Keep resolver order (it already prefers what the system prefers), drop duplicates.
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]), None)
    return list(seen)


@dataclass(frozen=True)
class StaticResolver:
    """A resolver with fixed answers for some names, falling back to another resolver.

    Tests use it to make ``public.test`` mean ``127.0.0.1`` without touching DNS.
    """

    table: dict[str, list[str]]
    fallback: Resolver = system_resolver

    def __call__(self, host: str, port: int) -> list[str]:
        key = host.lower().rstrip(".")
        if key in self.table:
            return list(self.table[key])
        return self.fallback(host, port)


def address_block_reason(address: IPAddress) -> str | None:
    """Why ``address`` must not be contacted, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            inner = address_block_reason(address.ipv4_mapped)
            return f"IPv4-mapped {inner}" if inner else None
        embedded: ipaddress.IPv4Address | None = None
        if address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        elif address in _SIX_TO_FOUR and address.sixtofour is not None:
            embedded = address.sixtofour
        if embedded is not None:
            inner = address_block_reason(embedded)
            if inner:
                return f"IPv6 form of a {inner}"
    if address.is_loopback:
        return "loopback address"
    if address.is_link_local:
        # 169.254.169.254 (cloud metadata) lives here, as does fe80::/10.
        return "link-local address (cloud metadata range)"
    if address.is_unspecified:
        return "unspecified address"
    if address.is_multicast:
        return "multicast address"
    if address.is_private:
        return "private address"
    if address.is_reserved or not address.is_global:
        return "non-public address"
    return None


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one fetch. Defaults suit product images."""

    max_bytes: int = 20 * 1024 * 1024
    #: Seconds for the whole fetch: every hop, headers and body.
    deadline: float = 20.0
    #: Seconds for establishing one TCP/TLS connection (also bounded by the deadline).
    connect_timeout: float = 5.0
    max_redirects: int = 5
    #: Host names (lower case) that may resolve to non-public addresses.
    allowed_hosts: frozenset[str] = frozenset()
    #: None means any port; otherwise only these ports.
    allowed_ports: frozenset[int] | None = None
    user_agent: str = "VitrineCatalogBot/1.0 (+https://github.com/vitrine)"


@dataclass(frozen=True)
class FetchResult:
    url: str
    final_url: str
    status_code: int
    content_type: str
    content: bytes
    #: Every URL requested, in order (the last one is ``final_url``).
    hops: tuple[str, ...] = field(default=())


ConnectObserver = Callable[[str, str, int], None]
"""Called as ``observer(host, ip, port)`` just before each TCP connect."""


class _PinnedNetworkBackend(httpcore.NetworkBackend):
    """Resolves, checks every address, then connects to a checked IP (never re-resolves)."""

    def __init__(
        self,
        *,
        policy: FetchPolicy,
        resolver: Resolver,
        observer: ConnectObserver | None,
    ) -> None:
        self._inner = httpcore.SyncBackend()
        self._policy = policy
        self._resolver = resolver
        self._observer = observer

    def checked_addresses(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` and return its addresses, refusing if any is not public."""
        host = host.strip("[]").lower().rstrip(".")
        addresses = self._resolver(host, port)
        if not addresses:
            raise NetworkError(f"host {host!r} has no addresses")
        if host in self._policy.allowed_hosts:
            return addresses
        for raw in addresses:
            try:
                address = ipaddress.ip_address(raw.split("%", 1)[0])
            except ValueError as exc:
                raise BlockedURLError(f"host {host!r} resolved to a non-IP {raw!r}") from exc
            reason = address_block_reason(address)
            if reason:
                # Refuse even when another address is public: we would not control which
                # one a retry, or a later pooled connection, ends up using.
                raise BlockedURLError(f"host {host!r} resolves to a {reason} ({address})")
        return addresses

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        last_error: Exception | None = None
        for ip in self.checked_addresses(host, port):
            if self._observer is not None:
                self._observer(host, ip, port)
            try:
                return self._inner.connect_tcp(
                    ip, port, timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise BlockedURLError("unix sockets are not allowed")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream
        except httpcore.TimeoutException as exc:
            raise httpx.ReadTimeout(str(exc)) from exc
        except httpcore.NetworkError as exc:
            raise httpx.ReadError(str(exc)) from exc
        except httpcore.ProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class PinnedTransport(httpx.BaseTransport):
    """An httpx transport whose connections go only to pre-checked public addresses."""

    def __init__(
        self,
        *,
        policy: FetchPolicy,
        resolver: Resolver = system_resolver,
        observer: ConnectObserver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.backend = _PinnedNetworkBackend(policy=policy, resolver=resolver, observer=observer)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context or ssl.create_default_context(),
            network_backend=self.backend,
            max_connections=20,
            max_keepalive_connections=10,
            keepalive_expiry=30.0,
            retries=0,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = self._pool.handle_request(core_request)
        except httpcore.TimeoutException as exc:
            raise httpx.TimeoutException(str(exc), request=request) from exc
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise httpx.TransportError(str(exc), request=request) from exc
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


class SafeFetcher:
    """Fetches public http(s) URLs within a :class:`FetchPolicy`.

    Use as a context manager, or call :meth:`close`; one instance reuses connections
    (keep-alive) across fetches, which matters when a feed's images share one CDN.

    Example::

        with SafeFetcher(FetchPolicy(max_bytes=5_000_000)) as fetcher:
            body = fetcher.fetch("https://cdn.example.com/a.jpg").content
    """

    def __init__(
        self,
        policy: FetchPolicy | None = None,
        *,
        resolver: Resolver = system_resolver,
        observer: ConnectObserver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy or FetchPolicy()
        self._transport = PinnedTransport(
            policy=self.policy, resolver=resolver, observer=observer, ssl_context=ssl_context
        )
        # trust_env=False: an HTTP(S)_PROXY variable must not route around the checks.
        self._client = httpx.Client(
            transport=self._transport,
            follow_redirects=False,
            trust_env=False,
            # identity: a compressed body could expand far past the byte cap in one chunk.
            headers={
                "User-Agent": self.policy.user_agent,
                "Accept": "*/*",
                "Accept-Encoding": "identity",
            },
        )

    def __enter__(self) -> SafeFetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def check_url(self, url: str) -> httpx.URL:
        """Validate a URL's form (scheme, host, port) without any network access."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise BlockedURLError(f"not a valid URL: {url[:200]!r}") from exc
        if parsed.scheme not in ("http", "https"):
            raise BlockedURLError(
                f"only http and https URLs are allowed, not {parsed.scheme or 'no'!r} scheme"
            )
        if not parsed.host:
            raise BlockedURLError("URL has no host")
        if parsed.userinfo:
            raise BlockedURLError("URLs with credentials are not allowed")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        if self.policy.allowed_ports is not None and port not in self.policy.allowed_ports:
            raise BlockedURLError(f"port {port} is not allowed")
        return parsed

    def fetch(self, url: str, *, accept: str = "*/*") -> FetchResult:
        """GET ``url`` following redirects by hand; return the 200 body or raise FetchError."""
        started = time.monotonic()
        deadline = started + self.policy.deadline
        current = self.check_url(url)
        hops: list[str] = []
        for _hop in range(self.policy.max_redirects + 1):
            hops.append(str(current))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchTimeoutError(f"gave up after {self.policy.deadline:g}s")
            timeout = httpx.Timeout(remaining, connect=min(remaining, self.policy.connect_timeout))
            request = self._client.build_request(
                "GET", current, headers={"Accept": accept}, timeout=timeout
            )
            try:
                response = self._client.send(request, stream=True)
            except httpx.TimeoutException as exc:
                raise FetchTimeoutError(f"timed out connecting to {current.host}") from exc
            except httpx.TransportError as exc:
                raise NetworkError(f"could not connect to {current.host}: {exc}") from exc
            try:
                if response.status_code in _REDIRECT_CODES:
                    location = response.headers.get("Location")
                    if not location:
                        raise HTTPStatusError(
                            f"HTTP {response.status_code} redirect without a Location",
                            status_code=response.status_code,
                        )
                    current = self.check_url(str(current.join(location)))
                    continue
                if response.status_code != 200:
                    raise HTTPStatusError(
                        f"HTTP {response.status_code} from {current.host}",
                        status_code=response.status_code,
                    )
                content = self._read_capped(response, deadline=deadline)
                return FetchResult(
                    url=url,
                    final_url=str(current),
                    status_code=response.status_code,
                    content_type=response.headers.get("Content-Type", ""),
                    content=content,
                    hops=tuple(hops),
                )
            finally:
                response.close()
        raise TooManyRedirectsError(f"more than {self.policy.max_redirects} redirects")

    def _read_capped(self, response: httpx.Response, *, deadline: float) -> bytes:
        cap = self.policy.max_bytes
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise ResponseTooLargeError(
                f"response is {int(declared):,} bytes, the limit is {cap:,} bytes"
            )
        decoder = _BoundedDecoder.for_header(response.headers.get("Content-Encoding", ""), cap=cap)
        received = 0
        try:
            # iter_raw: the bytes as they came off the wire. httpx's own decoding
            # (iter_bytes) would inflate every stacked layer of a chunk in memory first.
            for chunk in response.iter_raw():
                received += len(chunk)
                if received > cap:
                    raise ResponseTooLargeError(f"response is over the {cap:,} byte limit")
                # A server dripping a byte at a time never trips the per-read timeout,
                # so the total deadline is checked between chunks.
                if time.monotonic() > deadline:
                    raise FetchTimeoutError(
                        f"response body not complete after {self.policy.deadline:g}s"
                    )
                decoder.feed(chunk)
        except httpx.TimeoutException as exc:
            raise FetchTimeoutError(
                f"response body not complete after {self.policy.deadline:g}s"
            ) from exc
        except httpx.TransportError as exc:
            raise NetworkError(f"connection failed while reading: {exc}") from exc
        return decoder.finish()


#: Content-Encoding tokens we decode, to zlib's ``wbits`` (gzip header, zlib header).
_DECODABLE_ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": 0}


class _BoundedDecoder:
    """Decodes at most one gzip/deflate layer, never holding more than ``cap`` output bytes.

    zlib is asked for at most ``cap - decoded + 1`` bytes per call, so a bomb is stopped
    after one byte past the cap, whatever its ratio.
    """

    def __init__(self, *, wbits: int | None, cap: int) -> None:
        self._cap = cap
        self._chunks: list[bytes] = []
        self._size = 0
        self._wbits = wbits
        self._inflater: zlib._Decompress | None = None
        self._pending = b""  # deflate: bytes seen before we know which framing it uses

    @classmethod
    def for_header(cls, header: str, *, cap: int) -> _BoundedDecoder:
        tokens = [t.strip().lower() for t in header.split(",") if t.strip()]
        layers = [t for t in tokens if t != "identity"]
        if len(layers) > 1:
            raise UnsupportedEncodingError(
                f"stacked Content-Encoding {header.strip()!r} is refused (one layer at most)"
            )
        if not layers:
            return cls(wbits=None, cap=cap)
        if layers[0] not in _DECODABLE_ENCODINGS:
            raise UnsupportedEncodingError(f"unsupported Content-Encoding {layers[0]!r}")
        return cls(wbits=_DECODABLE_ENCODINGS[layers[0]], cap=cap)

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._cap:
            raise ResponseTooLargeError(f"response decodes to over the {self._cap:,} byte limit")
        self._chunks.append(data)

    def _inflate(self, data: bytes) -> None:
        assert self._inflater is not None
        while data:
            try:
                out = self._inflater.decompress(data, self._cap - self._size + 1)
            except zlib.error as exc:
                raise FetchError(f"compressed response is corrupt: {exc}") from exc
            self._keep(out)
            data = self._inflater.unconsumed_tail
            if self._inflater.eof:
                if self._inflater.unused_data or data:
                    # A second gzip member: another layer of the same trick, refused.
                    raise UnsupportedEncodingError("compressed response has trailing data")
                return

    def feed(self, data: bytes) -> None:
        if self._wbits is None:
            self._keep(data)
            return
        if self._inflater is None:
            if self._wbits == 0:
                # "deflate" is meant to be zlib-wrapped, but many servers send raw deflate.
                self._pending += data
                if len(self._pending) < 2:
                    return
                data, self._pending = self._pending, b""
                wrapped = (data[0] & 0x0F) == 8 and (data[0] * 256 + data[1]) % 31 == 0
                self._wbits = zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS
            self._inflater = zlib.decompressobj(self._wbits)
        self._inflate(data)

    def finish(self) -> bytes:
        if self._wbits is not None and (self._inflater is None or not self._inflater.eof):
            raise FetchError("compressed response is truncated")
        return b"".join(self._chunks)


def fetch_policy_from_settings(
    *,
    allowed_hosts: Sequence[str] = (),
    max_bytes: int | None = None,
    deadline: float | None = None,
) -> FetchPolicy:
    """Build a policy from plain values (the Django layer passes its settings here)."""
    base = FetchPolicy()
    return FetchPolicy(
        max_bytes=max_bytes if max_bytes is not None else base.max_bytes,
        deadline=deadline if deadline is not None else base.deadline,
        allowed_hosts=frozenset(h.lower().rstrip(".") for h in allowed_hosts if h),
    )
