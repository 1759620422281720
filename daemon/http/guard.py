"""What every HTTP front of the daemon checks before a handler runs (design: docs/api.md).

- Host: a name of this daemon only, so a DNS-rebinding page cannot read the API (421).
- Origin (or Referer) of state-changing requests: the daemon's own or `[api] allowed_origins`,
  so another site open in the user's browser cannot submit, cancel or unload (403).
- Body types: JSON or multipart only, so a `text/plain` "simple request" is never read as a
  job (415); never compressed (`Content-Encoding` other than identity: 415), so a few bytes
  sent cannot become hundreds of megabytes read.
- Response headers: nosniff, no framing, no caching of status documents.
- Connections: a cap (`max_connections`, sized to the file-descriptor limit so that spool
  work always has descriptors left) with a plain 503 beyond it, and read timeouts for
  request heads and bodies (slowloris).

Clients that send no Origin (curl, requests, the CLI, the seeds' scripts) are not browsers
acting for someone else, so they pass the origin check.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import structlog
from aiohttp import BodyPartReader, MultipartReader, web

from daemon.config import LimitsConfig
from daemon.view.for_fronts import spool_fault

log = structlog.get_logger()

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_AND_MULTIPART = frozenset({"application/json", "multipart/form-data"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
CORS_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE"
CORS_HEADERS = "Authorization, Content-Type, Last-Event-ID"
# The page needs only its own scripts, styles, result previews and API.
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
            "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")
# A connection over the cap is answered and closed; it may linger this long for its request.
REFUSED_LINGER_SECONDS = 1.0
# "--" + a boundary (at most 70 characters, RFC 2046) + "--" + CRLF; lines before the first.
BOUNDARY_LINE_BYTES = 80
PREAMBLE_LINES = 4


def json_error(status: int, code: str, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


def spool_answer(exc: OSError) -> tuple[int, str, str] | None:
    """A broken spool met by a request (dead mount: 503, full disk: 507) as (status, code,
    message); None for an error that is not the spool's."""
    reason = spool_fault(exc)
    if reason is None:
        return None
    if "ENOSPC" in reason or "EDQUOT" in reason:
        return 507, "insufficient_storage", f"spool unavailable: {reason}"
    return 503, "spool_unavailable", f"spool unavailable: {reason}"


def host_name(value: str) -> str | None:
    """`Host`-header or URL netloc → lower-case host without port or brackets."""
    try:
        name = urlsplit(f"//{value}").hostname
    except ValueError:
        return None
    return name.rstrip(".") if name else None


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def is_loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def origin_of(url: str) -> str | None:
    """scheme://host[:port] of a URL, lower-case, default ports dropped; None if not one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


@dataclass(frozen=True)
class HttpPolicy:
    """Which names, origins and body types one HTTP front accepts."""

    listen_host: str
    allowed_hosts: frozenset[str] = frozenset()
    allowed_origins: frozenset[str] = frozenset()
    body_types: frozenset[str] = JSON_AND_MULTIPART
    read_timeout: float = 15.0
    machine_names: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def for_listener(cls, listen_host: str, allowed_hosts: Iterable[str] = (), allowed_origins: Iterable[str] = (),
                     body_types: Iterable[str] = JSON_AND_MULTIPART, read_timeout: float = 15.0) -> "HttpPolicy":
        listen = listen_host.strip("[]").lower()
        names: set[str] = set()
        if not is_loopback(listen):  # reached from other machines: by this machine's names too
            names = {n.lower() for n in (socket.gethostname(), socket.getfqdn()) if n}
        return cls(listen, frozenset(h.lower().rstrip(".") for h in allowed_hosts),
                   frozenset(o for o in (origin_of(x) for x in allowed_origins) if o),
                   frozenset(body_types), read_timeout, frozenset(names))

    def host_allowed(self, name: str) -> bool:
        if name == self.listen_host or name in self.allowed_hosts or is_loopback(name):
            return True
        if self.listen_host in WILDCARD_HOSTS or not is_loopback(self.listen_host):
            # An IP literal cannot be rebound by DNS; the machine's names are its own.
            return is_ip_literal(name) or name in self.machine_names
        return False


def request_origin(request: web.Request) -> str | None:
    """The Origin a browser sent, or the origin of its Referer; None from non-browsers."""
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin.strip().lower()
    referer = request.headers.get("Referer")
    if referer:
        return origin_of(referer) or "null"
    return None


def own_origin(request: web.Request) -> str | None:
    host = request.headers.get("Host")
    return origin_of(f"{request.scheme}://{host}") if host else None


@functools.lru_cache(maxsize=256)  # a client sends the same Host on every request
def host_refused(policy: HttpPolicy, host: str) -> bool:
    """Whether a `Host` header names no name of this daemon."""
    name = host_name(host)
    return name is None or not policy.host_allowed(name)


def guard_refusal(policy: HttpPolicy, request: web.Request, error: Callable[..., web.Response] = json_error) -> web.Response | None:
    """The request checks of one HTTP front (run first: daemon/http/chain.py): the answer
    to a request refused, `error(status, code, message)` in the front's error shape, or the
    answer to a CORS preflight; None when the request may go on."""
    host = request.headers.get("Host")
    if host is not None and host_refused(policy, host):  # HTTP/1.0 without Host comes from no browser
        return error(421, "misdirected_request", (
            f"Host {host!r} is not a name of this daemon; add it to [api] allowed_hosts "
            "if clients reach the daemon by it"))
    origin = request_origin(request)
    cors = origin is not None and origin in policy.allowed_origins
    method = request.method
    if method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if not cors:
            return error(403, "forbidden_origin", f"cross-origin requests from {origin!r} are not allowed "
                              "(add the front-end's origin to [api] allowed_origins)")
        return web.Response(status=204, headers={
            **cors_headers(origin), "Access-Control-Allow-Methods": CORS_METHODS,
            "Access-Control-Allow-Headers": CORS_HEADERS, "Access-Control-Max-Age": "600"})
    if method in STATE_CHANGING and origin is not None and not cors and origin != own_origin(request):
        log.warning("api.cross_origin_refused", method=method, path=request.path, origin=origin)
        return error(403, "forbidden_origin", (
            f"{method} from origin {origin!r} refused: only this daemon's own page and "
            "[api] allowed_origins may change things"))
    if request.body_exists:
        if method in STATE_CHANGING and request.content_type not in policy.body_types:
            return error(415, "unsupported_media_type", (
                f"Content-Type {request.content_type or '(none)'!r} is not accepted; send "
                f"{' or '.join(sorted(policy.body_types))}"))
        if (coding := content_coding(request)) is not None:
            # Read as sent (the runner does not decompress): a small compressed body must not
            # become a large one in memory. RFC 7694: say which coding is accepted.
            return error(415, "unsupported_media_type", (
                f"Content-Encoding {coding!r} is not accepted: send the body uncompressed"),
                headers={"Accept-Encoding": "identity"})
    if cors:
        request["cors_origin"] = origin
    return None


def content_coding(request: web.Request) -> str | None:
    """The request body's Content-Encoding when it is not identity (compressed), else None."""
    for value in request.headers.getall("Content-Encoding", ()):
        for coding in value.split(","):
            if coding.strip().lower() not in ("", "identity"):
                return value.strip()
    return None


def cors_headers(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
            "Access-Control-Expose-Headers": "Content-Disposition, Retry-After"}


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the headers every answer carries."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    if response.content_type == "text/html":
        headers.setdefault("Content-Security-Policy", PAGE_CSP)
    else:
        headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
    # Status documents change under the reader: never cached. Files and the page set their own.
    headers.setdefault("Cache-Control", "no-store")
    origin = request.get("cors_origin")
    if origin:
        for key, value in cors_headers(origin).items():
            headers.setdefault(key, value)


# -- reading bodies -----------------------------------------------------------------
class ReadTimeout(Exception):
    """The client sent no bytes of its body for the read timeout."""


async def within(awaitable: Awaitable, seconds: float):
    """One read of a request body, given at most `seconds` (an idle client is dropped)."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise ReadTimeout(f"no request body bytes for {seconds:g} s ([api] read_timeout_seconds)") from None


def timeout_response(exc: ReadTimeout) -> web.Response:
    response = json_error(408, "request_timeout", str(exc))
    response.force_close()
    return response


async def read_body(request: web.Request, limit: int, seconds: float) -> bytes:
    """The whole body, at most `limit` bytes (web.HTTPRequestEntityTooLarge past it), with
    `seconds` allowed between two chunks."""
    chunks, size = [], 0
    while chunk := await within(request.content.readany(), seconds):
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        chunks.append(chunk)
    return b"".join(chunks)


class FormReader(MultipartReader):
    """aiohttp's multipart reader with a short preamble only: the boundary line within the
    first PREAMBLE_LINES short lines (browsers, curl and requests send none; some clients a
    blank line). aiohttp 3.14.5 (pinned) skips any preamble a line at a time without
    yielding: 30 MB of short lines held the event loop, and the heartbeat, for seconds."""

    async def _read_until_first_boundary(self) -> None:
        for _ in range(PREAMBLE_LINES + 1):
            line = (await self._content.readline(max_line_length=BOUNDARY_LINE_BYTES)).rstrip()
            if line == self._boundary + b"--":
                self._at_eof = True
            if line in (self._boundary, self._boundary + b"--"):
                return
        raise ValueError(f"the body does not begin with its boundary line (at most {PREAMBLE_LINES} lines before it)")


def read_form(request: web.Request) -> FormReader:
    """The request's multipart body, part by part (what request.multipart() gives, with
    aiohttp's default limits on part headers)."""
    return FormReader(request.headers, request.content, client_max_size=request.client_max_size,
                      max_size_error_cls=web.HTTPRequestEntityTooLarge)


class FormTooLarge(Exception):
    """A form with more fields or more text than `[limits]` allows (answered 413)."""


class FormBudget:
    """What one form request may still send: parts (fields and files, `[limits] form_fields`)
    and bytes of text fields (`form_bytes` together, `job_json_bytes` each), counted as they
    arrive so that many small fields cannot add up in memory."""

    def __init__(self, limits: LimitsConfig, seconds: float):
        self.parts_left = limits.form_fields
        self.text_left = max(limits.form_bytes, limits.job_json_bytes)
        self.limits, self.seconds = limits, seconds

    def part(self) -> None:
        """Counts one more part; FormTooLarge past the cap."""
        if self.parts_left == 0:
            raise FormTooLarge(f"more than {self.limits.form_fields} fields and files in one request ([limits] form_fields)")
        self.parts_left -= 1

    async def text(self, part: BodyPartReader) -> bytes:
        """A text field's bytes (its transfer encoding undone), read a chunk at a time and
        refused at the first byte over a limit."""
        raw = bytearray()
        while chunk := await within(part.read_chunk(), self.seconds):  # its default 8 KB: a bigger read re-buffers the rest
            raw += chunk
            if len(raw) > self.limits.job_json_bytes:
                raise FormTooLarge(f"form field {part.name!r} is over [limits] job_json_bytes ({self.limits.job_json_bytes})")
            if len(raw) > self.text_left:
                raise FormTooLarge(f"the text fields of this form are over [limits] form_bytes "
                                   f"({max(self.limits.form_bytes, self.limits.job_json_bytes)}) together")
        self.text_left -= len(raw)
        return bytes(part.decode(raw))


# -- connections --------------------------------------------------------------------
class ConnectionGate:
    """The protocol factory in front of aiohttp's: counts open connections and answers
    those over the cap with a plain 503 instead of handing them to aiohttp."""

    def __init__(self, server: Callable[[], asyncio.Protocol], limit: int, on_refuse: Callable[[], None]):
        self.server = server
        self.limit = limit
        self.open = 0
        self.refusing = 0
        self.on_refuse = on_refuse

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self.limit:
            self.on_refuse()
            return RefusedConnection(self)
        self.open += 1
        return CountedConnection(self.server(), self)


class CountedConnection(asyncio.Protocol):
    """aiohttp's request handler for one connection, counted while it is open."""

    def __init__(self, inner: asyncio.Protocol, gate: ConnectionGate):
        self.inner, self.gate = inner, gate

    def connection_made(self, transport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc) -> None:
        self.gate.open -= 1
        self.inner.connection_lost(exc)


BUSY_BODY = json.dumps({"error": {"code": "unavailable", "message": (
    "too many open connections ([api] max_connections); try again shortly")}}).encode()
BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                 b"Retry-After: 5\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(BUSY_BODY)) + BUSY_BODY


class RefusedConnection(asyncio.Protocol):
    """Over the cap: the 503 is written at once; the request is read and dropped for a
    moment (closing with unread bytes would reset the connection before the client reads
    the answer), then the connection is closed."""

    def __init__(self, gate: ConnectionGate):
        self.gate = gate
        self.transport = None
        self.timer = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.gate.refusing += 1
        transport.write(BUSY_RESPONSE)
        if self.gate.refusing > max(8, self.gate.limit // 4):  # a flood: no lingering, no descriptors held
            transport.abort()
            return
        self.timer = asyncio.get_running_loop().call_later(REFUSED_LINGER_SECONDS, transport.close)

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            self.transport.close()

    def eof_received(self):
        return False  # let the transport close

    def connection_lost(self, exc) -> None:
        self.gate.refusing -= 1
        if self.timer is not None:
            self.timer.cancel()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections pass through a ConnectionGate."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, max_connections: int,
                 on_refuse: Callable[[], None] = lambda: None, backlog: int = 128):
        super().__init__(runner, backlog=backlog)
        self.host, self.requested_port, self.port = host, port, port
        self.gate: ConnectionGate | None = None
        self.max_connections, self.on_refuse = max_connections, on_refuse

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        self.gate = ConnectionGate(self._runner.server, self.max_connections, self.on_refuse)
        self._server = await asyncio.get_running_loop().create_server(
            self.gate, self.host, self.requested_port, backlog=self._backlog, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def open_connections(self) -> int:
        return self.gate.open if self.gate else 0
