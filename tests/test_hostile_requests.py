"""Hostile requests on every front (issue 25, items 3, 9, 10, 11 and the property test): the
native API and the five seed personalities of one real daemon on loopback, with tokens set
and without. Compressed bodies are refused (415) rather than inflated, form fields are
limited in number and bytes, an `Authorization` header that is not UTF-8 is a 401, an
integer past Python's 4,300 digits (or NaN) is a 400 naming its field, a Visualizr
WebSocket client that never reads is dropped; and generated hostile multipart bodies,
headers and JSON get an answer below 500 in the front's error shape, write nothing outside
the inbox's staging, leave the daemon's memory bounded and its heartbeat moving."""

from __future__ import annotations

import base64
import functools
import gzip
import json
import os
import socket
import struct
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from daemon.config import LimitsConfig
from tests.support import REPO, Daemon, wait_for, wait_status

TOKEN = "hostile-requests-token-0123456789"
FORM_FIELDS = LimitsConfig().form_fields  # the default [limits] form_fields
FRONTS = ("native", "heygem", "story", "paksatalker", "visualizr", "wan")
# Each front's paths that read a body, and how the seed sends one ("json" or "form").
POSTS = {
    "native": [("/api/v1/jobs", "json")],
    "heygem": [("/api/generate", "form")],
    "story": [("/api/v1/generate", "json")],
    "paksatalker": [("/api/v1/generate/fusion-video", "form"), ("/api/v1/generate/video-from-prompt", "form")],
    "visualizr": [("/api/v1/generate/video", "json"), ("/api/v1/generate/video/from-image", "form")],
    "wan": [("/api/v1/generate/text-to-video", "json"), ("/api/v1/generate/image-to-video", "form")],
}
# A path of each front that answers a GET (for header abuse).
GETS = {"native": "/api/v1/jobs/nosuch", "heygem": "/api/status/nosuch", "story": "/api/v1/status/nosuch",
        "paksatalker": "/api/v1/status/nosuch", "visualizr": "/api/v1/generate/status/nosuch", "wan": "/api/v1/job/nosuch"}
# The upload fields of the form paths.
FILES = {"/api/generate": ["video"], "/api/v1/generate/fusion-video": ["image", "audio", "backgroundImage"],
         "/api/v1/generate/video/from-image": ["image"], "/api/v1/generate/image-to-video": ["image"],
         "/api/v1/jobs": ["in.png"]}
# Text the seeds need, so that hostile parts ride on a request that is otherwise fine.
FIELDS = {"text": "Hello there.", "prompt": "a red fox", "kind": "probe"}


def error_shape_ok(front: str, body) -> bool:
    """Whether an error body is in the front's seed shape (docs/compat.md)."""
    if not isinstance(body, dict):
        return False
    if front in ("native", "visualizr"):
        inner = body.get("error")
        return isinstance(inner, dict) and isinstance(inner.get("code"), str) and isinstance(inner.get("message"), str)
    if front == "heygem":
        return body.get("success") is False and isinstance(body.get("error"), str)
    if front == "paksatalker":
        return body.get("success") is False and isinstance(body.get("detail"), str)
    return isinstance(body.get("error"), str)  # story, wan


def message_of(front: str, body: dict) -> str:
    if front in ("native", "visualizr"):
        return body["error"]["message"]
    return body["detail"] if front == "paksatalker" else body["error"]


# -- the daemon ----------------------------------------------------------------------------

@dataclass
class Farm:
    daemon: Daemon
    urls: dict[str, str]
    token: str | None
    base: Path

    def auth(self) -> list[tuple[bytes, bytes]]:
        return [(b"Authorization", f"Bearer {self.token}".encode())] if self.token else []


def start_farm(base: Path, token: str | None, models: Path) -> Farm:
    face = base / "face.png"
    Image.new("RGB", (64, 64), "tan").save(face)
    compat = {name: {"listen": "127.0.0.1:0", **({"require_tokens": True} if token else {})}
              for name in FRONTS[1:]}
    for name in ("heygem", "paksatalker"):
        compat[name]["default_face"] = str(face)
    # Models for Wan's kinds (tiny, never run: the farm is paused), so that Wan reads its bodies.
    settings = {"VIDSPOOL_COMPAT": json.dumps(compat),
                "VIDSPOOL_MODELS": json.dumps({"t2v": {"path": str(models / "wan-t2v")}, "i2v": {"path": str(models / "wan-i2v")}}),
                "VIDSPOOL_KINDS": json.dumps({"text-to-video": {"model": "t2v"}, "image-to-video": {"model": "i2v"},
                                              "video-to-video": {"model": "t2v"}})}
    if token:
        settings["VIDSPOOL_API__TOKENS"] = json.dumps([token])
    d = Daemon(base / "spool", workers=["cpu"], **settings).start()
    farm = Farm(d, {"native": d.api, **d.heartbeat["compat_urls"]}, token, base)
    # Paused: what a hostile request makes a job of waits in the queue instead of running.
    status, _, body = send(farm, "native", "POST", "/api/v1/pause", [(b"Content-Type", b"application/json")], b"{}")
    assert status == 200, body
    return farm


@pytest.fixture(scope="module")
def farms(tmp_path_factory, tiny_models):
    started: dict[str, Farm] = {}
    try:
        started["tokens"] = start_farm(tmp_path_factory.mktemp("hostile-requests-tokens"), TOKEN, tiny_models)
        started["open"] = start_farm(tmp_path_factory.mktemp("hostile-requests-open"), None, tiny_models)
        yield started
    finally:
        for farm in started.values():
            farm.daemon.stop()


@pytest.fixture(scope="module")
def farm(farms) -> Farm:
    return farms["tokens"]


# -- raw HTTP ----------------------------------------------------------------------------------

def send(farm: Farm, front: str, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"",
         auth: bool = True, host: bytes | None = b"127.0.0.1", timeout: float = 30) -> tuple[int, dict, bytes]:
    """One request with exactly these header bytes (plus Host, Content-Length, Connection:
    close and the farm's token unless told); (status, lower-case headers, body), status 0
    when no answer came."""
    parts = urlsplit(farm.urls[front])
    lines = [method.encode() + b" " + path.encode() + b" HTTP/1.1"]
    if host is not None:
        lines.append(b"Host: " + host)
    lines += [b"Connection: close", b"Content-Length: %d" % len(body)]
    lines += [k + b": " + v for k, v in (farm.auth() if auth else []) + headers]
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as s:
        try:
            s.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered before the whole body was read; the answer is still there
        got = b""
        try:
            while chunk := s.recv(1 << 16):
                got += chunk
        except ConnectionResetError:
            pass
    head, _, rest = got.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    if not status_line.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")):  # 1.0: aiohttp's own answer to a malformed head
        return 0, {}, got
    found = {}
    for line in header_lines:
        k, _, v = line.partition(b":")
        found[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    return int(status_line.split()[1]), found, rest


def json_of(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return None


def multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"HostileBoundary") -> tuple[list, bytes]:
    """[(part head lines, content)] as a multipart/form-data body and its Content-Type."""
    body = b"".join(b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + content + b"\r\n" for head, content in parts)
    return [(b"Content-Type", b"multipart/form-data; boundary=" + boundary)], body + b"--" + boundary + b"--\r\n"


def field_part(name: str, value: bytes) -> tuple[bytes, bytes]:
    return f'Content-Disposition: form-data; name="{name}"'.encode(), value


def daemon_rss_mb(d: Daemon) -> float:
    for line in open(f"/proc/{d.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Watch:
    """While open: the daemon's peak RSS and the longest time its heartbeat counter stood
    still (hosts/<host>.json), sampled from a thread."""

    def __init__(self, d: Daemon):
        self.d = d
        self.base = self.peak = daemon_rss_mb(d)
        self.longest_still = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        counter, since = self.d.heartbeat.get("counter"), time.monotonic()
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, daemon_rss_mb(self.d))
            now, seen = time.monotonic(), self.d.heartbeat.get("counter")
            if seen is not None and seen != counter:
                counter, since = seen, now
            self.longest_still = max(self.longest_still, now - since)

    def __enter__(self) -> "Watch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> float:
        return self.peak - self.base


def no_server_errors(d: Daemon) -> list[dict]:
    """Log events of failures on the daemon's side: handler tracebacks, crashed validation."""
    return [e for e in d.log_events() if e.get("level") in ("error", "critical") or "exception" in e
            or e.get("event") == "job.validation_crashed"]


# -- item 3: compressed bodies and form fields ----------------------------------------------

@functools.cache
def inflating_form(fields: int) -> bytes:
    """One gzip stream of a multipart form of `fields` text fields of 999 KB, about a
    kilobyte each: the filler is deflated once, from a reset window (Z_FULL_FLUSH), and
    its bytes repeated; the gzip frame (header, CRC, size) is written around them."""
    head, filler, end = b'--B\r\nContent-Disposition: form-data; name="f%d"\r\n\r\n', b"a" * 999_000 + b"\r\n", b"--B--\r\n"
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    squeezed = deflate.compress(filler) + deflate.flush(zlib.Z_FULL_FLUSH)
    out, crc, size = [], 0, 0
    for i in range(fields):
        out += [deflate.compress(head % i) + deflate.flush(zlib.Z_FULL_FLUSH), squeezed]
        crc, size = zlib.crc32(filler, zlib.crc32(head % i, crc)), size + len(head % i) + len(filler)
    out.append(deflate.compress(end) + deflate.flush())
    crc, size = zlib.crc32(end, crc), size + len(end)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"".join(out) + struct.pack("<II", crc, size & 0xFFFFFFFF)



def three_at_once(farm: Farm, front: str, path: str, headers: list, body: bytes) -> tuple[list[int], float]:
    """The same request three times in parallel: their statuses and how many MB the
    daemon grew meanwhile (at its peak)."""
    answers: list = []
    with Watch(farm.daemon) as watch:
        threads = [threading.Thread(target=lambda: answers.append(send(farm, front, "POST", path, headers, body)))
                   for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return [a[0] for a in answers], watch.growth



def each_post():
    for front, targets in POSTS.items():
        for path, _ in targets:
            yield front, path


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "x-gzip", "GZIP", "identity, gzip"])
def test_compressed_bodies_are_refused_on_every_front(farm, coding):
    raw = zlib.compress(b'{"text": "hi", "prompt": "hi", "kind": "probe"}') if coding == "deflate" else \
        gzip.compress(b'{"text": "hi", "prompt": "hi", "kind": "probe"}')
    for front, path in each_post():
        status, headers, body = send(farm, front, "POST", path, [(b"Content-Type", b"application/json"),
                                                                (b"Content-Encoding", coding.encode())], raw)
        doc = json_of(body)
        assert status == 415 and error_shape_ok(front, doc), (front, path, status, body[:300])
        assert "Content-Encoding" in message_of(front, doc) and headers.get("accept-encoding") == "identity"
    # identity is no compression: read as it is
    status, _, body = send(farm, "story", "POST", "/api/v1/generate", [(b"Content-Type", b"application/json"),
                                                                       (b"Content-Encoding", b"identity")], b"{}")
    assert status == 400 and "text" in message_of("story", json_of(body)), body


def test_a_small_compressed_form_cannot_inflate_the_daemon(farm):
    """The issue's attack: 400 text fields just under job_json_bytes, gzip-compressed to
    0.41 MB (400 MB inflated), three at once (they raised the daemon from 66 to 945 MB)."""
    raw = inflating_form(400)
    assert len(raw) < 500_000 and zlib.decompressobj(31).decompress(raw, 100).startswith(b"--B\r\n")
    headers = [(b"Content-Type", b"multipart/form-data; boundary=B"), (b"Content-Encoding", b"gzip")]
    statuses, growth = three_at_once(farm, "heygem", "/api/generate", headers, raw)
    assert statuses == [415, 415, 415] and growth < 30, (statuses, f"the daemon grew {growth:.0f} MB")


def test_form_fields_are_limited_in_number_and_bytes(farm):
    many = [field_part(f"f{i}", b"x") for i in range(FORM_FIELDS)]  # and `text`: one over
    for front, path in each_post():
        if dict(POSTS[front])[path] != "form":
            continue
        headers, body = multipart([field_part("text", b"hi")] + many)
        status, _, raw = send(farm, front, "POST", path, headers, body)
        doc = json_of(raw)
        assert status == 413 and error_shape_ok(front, doc), (front, path, status, raw[:300])
        assert "[limits] form_fields" in message_of(front, doc)
    # Natively too (its only text field is `job`; files count as well).
    headers, body = multipart([field_part("job", b'{"kind": "probe"}')] * (FORM_FIELDS + 1))
    status, _, raw = send(farm, "native", "POST", "/api/v1/jobs", headers, body)
    assert status == 413 and "form_fields" in json_of(raw)["error"]["message"], raw[:300]
    # Text fields each under job_json_bytes, together over form_bytes.
    headers, body = multipart([field_part("text", b"hi")] + [field_part(f"f{i}", b"y" * 400_000) for i in range(3)])
    for front, path in [("heygem", "/api/generate"), ("paksatalker", "/api/v1/generate/video-from-prompt"),
                        ("visualizr", "/api/v1/generate/video/from-image"), ("wan", "/api/v1/generate/image-to-video")]:
        status, _, raw = send(farm, front, "POST", path, headers, body)
        assert status == 413 and "[limits] form_bytes" in message_of(front, json_of(raw)), (front, raw[:300])
    # A url-encoded form: the same cap on fields.
    status, _, raw = send(farm, "heygem", "POST", "/api/generate", [(b"Content-Type", b"application/x-www-form-urlencoded")],
                          b"&".join(b"f%d=x" % i for i in range(FORM_FIELDS + 1)))
    assert status == 413 and "form_fields" in message_of("heygem", json_of(raw)), raw[:300]


def test_many_large_fields_sent_plainly_do_not_pile_up(farm):
    """Uncompressed, three requests of 30 fields of 999 KB each: refused at the first
    megabyte of text, so the daemon does not hold 90 MB per request."""
    headers, body = multipart([field_part(f"f{i}", b"z" * 999_000) for i in range(30)])
    statuses, growth = three_at_once(farm, "heygem", "/api/generate", headers, body)
    assert statuses == [413, 413, 413] and growth < 30, (statuses, f"the daemon grew {growth:.0f} MB")


def test_a_preamble_of_many_lines_is_refused_without_holding_the_loop(farm):
    """30 MB of short lines before the first boundary: aiohttp skipped them one at a time
    without yielding (the heartbeat stood still for seconds, then 408); now the body must
    begin with its boundary."""
    headers, body = multipart([field_part("text", b"hi")], b"B")
    with Watch(farm.daemon) as watch:
        started = time.monotonic()
        statuses, _ = three_at_once(farm, "heygem", "/api/generate", headers, b"a\r\n" * 10_000_000 + body)
        took = time.monotonic() - started
    assert statuses == [400, 400, 400] and took < 10, (statuses, took)
    assert watch.longest_still < 3.0, f"the heartbeat stood still {watch.longest_still:.1f} s"
    status, _, raw = send(farm, "heygem", "POST", "/api/generate", headers, b"\r\n" + body)  # a blank line is fine
    assert status == 200, raw[:300]


# -- item 10: headers that are not UTF-8 ----------------------------------------------------------

NOT_UTF8 = [b"Bearer \xff\xfe\xfd", b"Bearer caf\xe9-token-0123456789", b"\xff", b"Bearer " + TOKEN.encode() + b"\x80"]


def test_an_authorization_header_that_is_not_utf8_is_401_on_every_front(farm):
    streams = {"native": [("GET", "/api/v1/events", b"")], "visualizr": [("GET", "/api/v1/ws/generation", b"")]}
    for front in FRONTS:
        targets = [("GET", GETS[front], b""), *streams.get(front, [])] + [("POST", path, b"{}") for path, _ in POSTS[front]]
        for method, path, body in targets:
            for value in NOT_UTF8:
                status, headers, raw = send(farm, front, method, path, [(b"Authorization", value),
                                                                        (b"Content-Type", b"application/json")],
                                            body, auth=False)
                assert status == 401 and error_shape_ok(front, json_of(raw)), (front, path, value, status, raw[:200])
                assert headers.get("www-authenticate", "").startswith("Bearer")
    assert not no_server_errors(farm.daemon)


def test_other_headers_that_are_not_utf8_are_no_server_errors(farms):
    bad = b"\xff\xfe\xc3(\x80"
    for farm in farms.values():
        for front in FRONTS:
            path, _ = POSTS[front][0]
            for name in (b"Origin", b"Referer", b"Last-Event-ID", b"Range", b"If-None-Match", b"Cookie", b"X-Forwarded-For"):
                for method, target in (("GET", GETS[front]), ("POST", path)):
                    status, _, raw = send(farm, front, method, target, [(name, bad), (b"Content-Type", b"application/json")],
                                          b"{}" if method == "POST" else b"")
                    assert 0 < status < 500, (front, name, method, status, raw[:200])
            status, _, raw = send(farm, front, "GET", GETS[front], [], host=b"127.0.0.1\xff")
            assert status == 421, (front, status, raw[:200])
        assert not no_server_errors(farm.daemon)


# -- item 11: integers past Python's digit limit, NaN -----------------------------------------------

LONG = b"9" * 5000


def test_an_integer_of_5000_digits_is_400_naming_the_field_on_every_front(farm):
    for front, path in each_post():
        if front == "native":
            body = b'{"kind": "probe", "params": {"seconds": ' + LONG + b"}}"
            field_name = "params.seconds"
        else:
            body = b'{"text": "hi", "prompt": "hi", "seed": ' + LONG + b"}"
            field_name = "seed"
        status, _, raw = send(farm, front, "POST", path, [(b"Content-Type", b"application/json")], body)
        doc = json_of(raw)
        assert status == 400 and error_shape_ok(front, doc), (front, path, status, raw[:300])
        assert f"at {field_name}" in message_of(front, doc) and "5000 digits" in message_of(front, doc), doc
    # The native multipart `job` field, NaN and Infinity, and the same document dropped in the inbox.
    headers, body = multipart([field_part("job", b'{"kind": "probe", "params": {"seconds": ' + LONG + b"}}")])
    status, _, raw = send(farm, "native", "POST", "/api/v1/jobs", headers, body)
    assert status == 400 and "at params.seconds" in json_of(raw)["error"]["message"], raw[:300]
    for literal in (b"NaN", b"-Infinity", b"1e999"):
        status, _, raw = send(farm, "native", "POST", "/api/v1/jobs", [(b"Content-Type", b"application/json")],
                              b'{"kind": "probe", "params": {"seconds": ' + literal + b"}}")
        assert status == 400 and "at params.seconds" in json_of(raw)["error"]["message"], raw[:300]
        status, _, raw = send(farm, "story", "POST", "/api/v1/generate", [(b"Content-Type", b"application/json")],
                              b'{"text": "hi", "speed": ' + literal + b"}")
        assert status == 400 and "at speed" in message_of("story", json_of(raw)), raw[:300]
    inbox = farm.daemon.root / "inbox"
    (inbox / ".long.json.part").write_bytes(b'{"kind": "probe", "params": {"seconds": ' + LONG + b"}}")
    os.rename(inbox / ".long.json.part", inbox / "long.json")
    doc = wait_status(farm.daemon.root, "long", daemon=farm.daemon)
    assert doc["state"] == "failed" and doc["error"]["code"] == "invalid_job"
    assert "long.json has an integer of 5000 digits at params.seconds" in doc["error"]["message"], doc["error"]
    assert not no_server_errors(farm.daemon)


def test_form_numbers_past_float_range_or_nan_are_400(farm):
    for value in (b"9" * 400, b"nan", b"inf", b"1e999"):
        headers, body = multipart([field_part("prompt", b"hi"), field_part("fps", value)])
        status, _, raw = send(farm, "paksatalker", "POST", "/api/v1/generate/video-from-prompt", headers, body)
        doc = json_of(raw)
        assert status == 400 and "fps must be" in message_of("paksatalker", doc), (value, status, raw[:300])
    assert not no_server_errors(farm.daemon)


# -- item 9: a WebSocket client that never reads ---------------------------------------------------

def ws_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


def test_a_websocket_client_that_sends_and_never_reads_is_dropped(farm):
    parts = urlsplit(farm.urls["visualizr"])
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # it reads nothing; let its window fill
    s.connect((parts.hostname, parts.port))
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET /api/v1/ws/generation HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer " + TOKEN.encode()
              + b"\r\n\r\n")
    batch = ws_frame(b"x") * 10_000  # 70 KB of frames that are not JSON: an error answer each
    sent, dropped = 0, False
    s.settimeout(5)
    with Watch(farm.daemon) as watch:
        while sent < 7_000_000:
            try:
                s.sendall(batch)
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
                break
            except TimeoutError:  # the daemon stopped reading it without closing it
                break
            sent += len(batch)
    s.close()
    assert dropped, f"still connected after {sent} bytes of frames"
    assert watch.growth < 30, f"the daemon grew {watch.growth:.0f} MB"
    assert any(e.get("event") == "visualizr.ws_dropped" for e in farm.daemon.log_events())
    assert not no_server_errors(farm.daemon)


# -- the property test -----------------------------------------------------------------------------------

ODD_TEXT = [b"", b"x", b"\xff\xfe", b"caf\xe9", b"\xed\xa0\x80", b"a\x00b", b'quote"d', b"semi;colon", b"\xf0\x9f\xa6\x8a",
            b"x" * 5000, b"%ff%2e%2e", b"=?utf-8?b?w6k=?="]
HOSTILE_JSON = [b"9" * 4400, b"-" + b"9" * 4301, b"NaN", b"Infinity", b"-Infinity", b"1e999", b"1" * 400 + b".5",
                b"[" * 5000 + b"]" * 5000, b'{"a":' * 980 + b"1" + b"}" * 980, b"[" * 900 + b"]" * 900, b'"\\ud800"',
                b'"\\u0000"', b"{}", b"[]", b"null", b"true", b"-0", b"1e-999", b'"' + b"x" * 1_100_000 + b'"',
                b'{"__proto__": {"x": 1}}', b'"../../../etc/passwd"', b'["a", 1, null]' * 1]
JSON_KEYS = ["text", "prompt", "seed", "num_frames", "width", "height", "fps", "steps", "speed", "duration",
             "guidance_scale", "params", "inputs", "labels", "priority", "kind", "model", "id", "voice", "image",
             "resolution", "style", "negative_prompt", "webhook", "max_attempts", "version", "model_id"]


def header_value(draw) -> bytes:
    raw = draw(st.binary(max_size=40) | st.sampled_from(ODD_TEXT))
    return raw.replace(b"\r", b"").replace(b"\n", b"")[:8000]


@st.composite
def hostile_json(draw, front: str) -> bytes:
    """A JSON text with one hostile value among the fields the front reads."""
    base: dict = {"kind": "probe"} if front == "native" else {"text": "Hello.", "prompt": "a fox"}
    for key in draw(st.lists(st.sampled_from(JSON_KEYS), max_size=3)):
        base[key] = draw(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                         | st.text(max_size=30) | st.lists(st.integers(), max_size=3))
    where = draw(st.sampled_from(JSON_KEYS))
    if front == "native" and draw(st.booleans()):
        base["params"] = {where: "__HOSTILE__"}
    else:
        base[where] = "__HOSTILE__"
    text = json.dumps(base).encode()
    if draw(st.integers(0, 9)) == 0:  # not JSON at all, or not an object
        return draw(st.sampled_from(HOSTILE_JSON + [b"{", b"\xff{}", b"", b"  "]))
    return text.replace(b'"__HOSTILE__"', draw(st.sampled_from(HOSTILE_JSON)))


@st.composite
def hostile_part(draw, files: list[str], marker: str, spot: str) -> tuple[bytes, bytes]:
    name = draw(st.sampled_from([*FIELDS, *files, "job", "image", "video", "audio", "seed"]).map(str.encode)
                | st.sampled_from(ODD_TEXT))
    head = [b'Content-Disposition: form-data; name="' + name.replace(b'"', b"") + b'"']
    if draw(st.integers(0, 3)) > 0:
        filename = draw(st.sampled_from([
            f"../../{marker}.png", f"{spot}/{marker}.mp4", f"..\\..\\{marker}.wav", f"{marker}.png", f"/{marker}",
            f"{marker}%2f..%2fx.png", f".{marker}", f"{marker}.png\x00.txt", f"{'x' * 300}{marker}.mp4", f"{marker}\u202egnp.exe"]))
        head[0] += b'; filename="' + filename.encode("utf-8", "surrogatepass") + b'"'
    extra = draw(st.sampled_from([
        b"", b"Content-Type: image/png", b"Content-Type: multipart/mixed; boundary=Inner", b"Content-Transfer-Encoding: base64",
        b"Content-Transfer-Encoding: quoted-printable", b"Content-Transfer-Encoding: x-bogus", b"Content-Encoding: gzip",
        b"Content-Type: text/plain; charset=x-bogus", b"X-Odd: \xff\xfe", b"Content-Length: 99999999999999999999"]))
    if extra:
        head.append(extra)
    content = draw(st.sampled_from([b"", b"hi", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, b"--Inner\r\n\r\nx\r\n--Inner--",
                                    gzip.compress(b"\x00" * 5_000_000), base64.b64encode(b"hello"), b"!!!not base64",
                                    b"9" * 5000, b"NaN", b"\xff\xfe" * 10])
                   | st.binary(max_size=200))
    return b"\r\n".join(head), content


@st.composite
def hostile_request(draw, farm: Farm, marker: str) -> tuple[str, str, str, list, bytes, bool]:
    """(front, method, path, header lines, body, whether to add the farm's token): one
    hostile request to one front."""
    front = draw(st.sampled_from(FRONTS))
    if draw(st.integers(0, 5)) == 0:  # a GET with hostile headers and query
        method, path, style = "GET", GETS[front] + draw(st.sampled_from(["", "?access_token=%ff%fe", "?x=" + "y" * 3000,
                                                                           "?access_token=" + TOKEN])), "none"
    else:
        method = "POST"
        path, style = draw(st.sampled_from(POSTS[front]))
        style = draw(st.sampled_from([style, "json", "form", "form", "urlencoded", "raw"]))
    headers: list[tuple[bytes, bytes]] = []
    body = b""
    if style == "json":
        headers.append((b"Content-Type", b"application/json"))
        body = draw(hostile_json(front))
    elif style == "form":
        files = FILES.get(path, [])
        parts = [field_part(k, v.encode()) for k, v in FIELDS.items() if draw(st.booleans())]
        if front == "native":
            parts = [field_part("job", draw(st.just(b'{"kind": "probe"}') | hostile_json("native")))]
        parts = draw(st.permutations(parts + draw(st.lists(hostile_part(files, marker, str(farm.base)), min_size=1, max_size=5))))
        if draw(st.integers(0, 9)) == 0:  # a flood of small fields
            parts += [field_part(f"n{i}", b"v") for i in range(draw(st.sampled_from([FORM_FIELDS - 9, FORM_FIELDS * 2])))]
        boundary = draw(st.sampled_from([b"HostileBoundary", b"b" * 70, b"x", b"-"]))
        headers, body = multipart(parts, boundary)
        body = draw(st.sampled_from([body, body[:-4], body.replace(b"--" + boundary + b"--", b""), b"junk\r\n" + body,
                                     b"p\r\n" * 50_000 + body]))
        if draw(st.integers(0, 7)) == 0:
            headers = [(b"Content-Type", draw(st.sampled_from([b"multipart/form-data", b"multipart/form-data; boundary=",
                                                               b"multipart/form-data; boundary=\xff", b"multipart/mixed; boundary=x"])))]
    elif style == "urlencoded":
        headers.append((b"Content-Type", b"application/x-www-form-urlencoded"
                        + draw(st.sampled_from([b"", b"; charset=latin-1", b"; charset=x-bogus", b"; charset=utf-16"]))))
        body = b"text=hi&prompt=a+fox&" + draw(st.sampled_from([b"seed=" + b"9" * 5000, b"steps=nan", b"x=%ff%fe", b"\xff=\xfe",
                                                             b"&".join(b"f%d=1" % i for i in range(FORM_FIELDS + 50)), b"a=" + b"b" * 1_100_000]))
    elif style == "raw":
        headers.append((b"Content-Type", draw(st.sampled_from([b"application/json", b"text/plain", b"application/json; charset=\xff",
                                                               b"\xff/\xfe", b"application/octet-stream"]))))
        body = draw(st.binary(max_size=300))
    if draw(st.integers(0, 7)) == 0:  # compressed: refused before anything reads it
        coding = draw(st.sampled_from([b"gzip", b"deflate", b"br", b"x-gzip", b"gzip, identity", b"\xff"]))
        headers.append((b"Content-Encoding", coding))
        if coding.endswith(b"gzip"):
            body = gzip.compress(body)
    if method == "POST" and draw(st.integers(0, 15)) == 0:  # the attack: fields that inflate
        headers = [(b"Content-Type", b"multipart/form-data; boundary=B"), (b"Content-Encoding", b"gzip")]
        body = inflating_form(150)  # 150 MB inflated
    for name in draw(st.lists(st.sampled_from([b"Authorization", b"Origin", b"Referer", b"Last-Event-ID", b"Range",
                                               b"If-None-Match", b"Cookie", b"Accept-Language", b"X-Forwarded-Host",
                                               b"Transfer-Encoding"]), max_size=3, unique=True)):
        value = header_value(draw)
        if name == b"Authorization":
            value = draw(st.sampled_from([b"Bearer ", b"bearer ", b"Basic ", b""])) + value
        if name == b"Transfer-Encoding":
            value = draw(st.sampled_from([b"gzip, chunked", b"identity", b"chunked\xff"]))
        headers.append((name, value))
    auth = draw(st.integers(0, 3)) > 0 and not any(k == b"Authorization" for k, _ in headers)
    return front, method, path, headers, body, auth


def marked_files(roots: list[Path], marker: str) -> list[Path]:
    found = []
    for root in roots:
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d not in (".git", ".venv", ".cache", "node_modules")]
            found += [Path(folder) / n for n in names + dirs if marker in n]
    return found


@pytest.mark.parametrize("which", ["tokens", "open"])
def test_generated_hostile_requests_on_every_front(farms, which):
    farm = farms[which]
    d = farm.daemon
    marker = f"HOSTILE{uuid.uuid4().hex[:8]}"
    answered: list[tuple[str, int]] = []
    wrong: list = []

    @settings(max_examples=150, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data):
        front, method, path, headers, body, auth = data.draw(hostile_request(farm, marker))
        status, got_headers, raw = send(farm, front, method, path, headers, body, auth=auth)
        answered.append((front, status))
        if not 0 < status < 500:
            wrong.append((front, method, path, headers, body[:200], status, raw[:300]))
        elif status >= 400 and got_headers.get("content-type", "").startswith("application/json") \
                and not error_shape_ok(front, json_of(raw)):
            wrong.append((front, path, status, "not the seed's error shape", raw[:300]))

    with Watch(d) as watch:
        one()
    assert not wrong, "\n".join(map(repr, wrong[:5]))
    assert {front for front, _ in answered} == set(FRONTS)
    assert d.proc.poll() is None
    assert watch.growth < 50, f"the daemon grew {watch.growth:.0f} MB"
    lease = 4.0  # tests.support.Daemon: VIDSPOOL_SPOOL__LEASE_SECONDS
    assert watch.longest_still < lease, f"the heartbeat stood still {watch.longest_still:.1f} s"
    assert not no_server_errors(d), no_server_errors(d)[:3]
    # Uploads stay in the inbox's staging (removed with the request) or the jobs made of them.
    wait_for(lambda: not [n for n in os.listdir(d.root / "inbox") if n.startswith(".api-")], 10,
             "the requests' staging folders to be removed")
    allowed = [d.root / "queue", d.root / "outbox", d.root / "active"]
    outside = [p for p in marked_files([farm.base, REPO], marker) if not any(a in p.parents for a in allowed)]
    assert not outside, outside
