"""The API refuses what a hostile web page or a hostile client can send, with real daemons
and raw requests: other origins may not change anything, unknown Host names are refused
(DNS rebinding), only JSON and multipart bodies are read, every answer carries nosniff,
no-framing and caching headers, and slow or numerous connections cannot exhaust the
daemon: read timeouts, a connection cap, an event-stream cap, and a file-descriptor limit
under which spool work still runs."""

from __future__ import annotations

import http.client
import json
import os
import resource
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest

from tests.support import REPO, Daemon, base_env, drop_json, wait_for, wait_status

JOB = {"kind": "probe"}


def hostport(api: str) -> tuple[str, int]:
    parts = urlsplit(api)
    return parts.hostname, parts.port


def request(api: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            read: bool = True):
    """One raw HTTP request with exactly the headers given (plus Host unless given); with
    read=False, only the status (for streams)."""
    host, port = hostport(api)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    hdrs = dict(headers or {})
    conn.putrequest(method, path, skip_host="Host" in hdrs, skip_accept_encoding=True)
    for k, v in hdrs.items():
        conn.putheader(k, v)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    r = conn.getresponse()
    if not read:
        conn.close()
        return r.status
    data = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def post_job(api: str, doc: dict, **headers) -> tuple[int, dict, dict]:
    hdrs = {"Content-Type": "application/json", **{k.replace("_", "-"): v for k, v in headers.items()}}
    status, h, body = request(api, "POST", "/api/v1/jobs", json.dumps(doc).encode(), hdrs)
    return status, h, json.loads(body) if body else {}


def outbox_ids(root) -> set[str]:
    return {n for n in os.listdir(root / "outbox") if not n.startswith(".")}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("guard") / "spool", workers=["cpu"],
               VIDSPOOL_API__ALLOWED_HOSTS='["vidspool.test"]',
               VIDSPOOL_API__ALLOWED_ORIGINS='["http://front.test:9000"]',
               VIDSPOOL_API__READ_TIMEOUT_SECONDS="2",
               VIDSPOOL_API__MAX_CONNECTIONS="40",
               VIDSPOOL_API__MAX_EVENT_STREAMS="3").start()
    yield d
    d.stop()


# -- cross-site request forgery ----------------------------------------------------------
@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},  # sandboxed frames and file:// pages
    {"Referer": "http://evil.example/page.html"},  # a browser that sent no Origin
    {"Origin": "http://127.0.0.1:1"},  # same host, another port: another origin
])
def test_state_changes_from_another_origin_are_refused(guarded, headers):
    before = outbox_ids(guarded.root)
    status, _, body = post_job(guarded.api, {**JOB, "id": "csrf"}, **headers)
    assert status == 403 and body["error"]["code"] == "forbidden_origin", body
    for method, path in [("DELETE", "/api/v1/jobs/anything"), ("POST", "/api/v1/models/x/unload"),
                         ("POST", "/api/v1/models/x/load"), ("PUT", "/api/v1/jobs"), ("PATCH", "/api/v1/jobs/x")]:
        status, _, raw = request(guarded.api, method, path, headers=headers)
        assert status == 403 and json.loads(raw)["error"]["code"] == "forbidden_origin", (method, path, raw)
    assert outbox_ids(guarded.root) == before  # not even an id was reserved


def test_own_origin_and_clients_without_origin_may_submit(guarded):
    host, port = hostport(guarded.api)
    for n, headers in enumerate([{}, {"Origin": f"http://{host}:{port}"}, {"Referer": f"{guarded.api}/"},
                                 {"Origin": "http://front.test:9000"}]):
        status, _, body = post_job(guarded.api, {**JOB, "id": f"fine-{n}"}, **headers)
        assert status == 202, (headers, body)
        assert wait_status(guarded.root, body["id"], daemon=guarded)["state"] == "completed"


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/x-www-form-urlencoded", "text/json"])
def test_bodies_that_are_not_json_or_multipart_are_refused(guarded, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    status, _, raw = request(guarded.api, "POST", "/api/v1/jobs", json.dumps({**JOB, "id": "plain"}).encode(), headers)
    assert status == 415 and json.loads(raw)["error"]["code"] == "unsupported_media_type", raw
    assert not (guarded.root / "outbox" / "plain").exists()


def test_a_post_without_a_body_needs_no_content_type(guarded):
    status, _, raw = request(guarded.api, "POST", "/api/v1/models/nosuch/load")
    assert status == 404 and json.loads(raw)["error"]["code"] == "not_found"


def test_json_with_a_charset_is_json(guarded):
    status, _, raw = request(guarded.api, "POST", "/api/v1/jobs", json.dumps({**JOB, "id": "charset"}).encode(),
                             {"Content-Type": "application/json; charset=utf-8"})
    assert status == 202, raw


# -- DNS rebinding -------------------------------------------------------------------------
@pytest.mark.parametrize("host_header", ["evil.example", "rebind.attacker.test:8080", "vidspool.test.evil.example", "[::1"])
def test_unknown_host_names_are_refused(guarded, host_header):
    for path in ("/", "/api/v1/health", "/api/v1/jobs", "/api/v1/jobs/fine-0", "/metrics"):
        status, _, raw = request(guarded.api, "GET", path, headers={"Host": host_header})
        assert status == 421, (path, status, raw[:200])
        assert json.loads(raw)["error"]["code"] == "misdirected_request"


@pytest.mark.parametrize("host_header", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "[::1]:{port}",
                                         "vidspool.test:{port}", "vidspool.test."])
def test_own_names_are_served(guarded, host_header):
    _, port = hostport(guarded.api)
    status, _, _ = request(guarded.api, "GET", "/api/v1/health", headers={"Host": host_header.format(port=port)})
    assert status == 200


# -- a separate front-end (CORS) ---------------------------------------------------------
def test_allowed_origin_gets_cors_answers(guarded):
    status, h, _ = request(guarded.api, "OPTIONS", "/api/v1/jobs", headers={
        "Origin": "http://front.test:9000", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert status == 204
    assert h["access-control-allow-origin"] == "http://front.test:9000"
    assert "POST" in h["access-control-allow-methods"] and "Authorization" in h["access-control-allow-headers"]
    status, h, _ = request(guarded.api, "GET", "/api/v1/jobs", headers={"Origin": "http://front.test:9000"})
    assert status == 200 and h["access-control-allow-origin"] == "http://front.test:9000" and h["vary"] == "Origin"
    status, h, _ = request(guarded.api, "OPTIONS", "/api/v1/jobs", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert status == 403 and "access-control-allow-origin" not in h
    status, h, _ = request(guarded.api, "GET", "/api/v1/jobs", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in h  # the browser keeps the answer from that page


# -- response headers ------------------------------------------------------------------------
def test_every_answer_has_nosniff_no_framing_and_cache_rules(guarded):
    status, _, body = post_job(guarded.api, {**JOB, "id": "headers"})
    wait_status(guarded.root, "headers", daemon=guarded)
    expected_cache = {
        "/": "private, no-cache",
        "/static/app.js": "private, no-cache",
        "/api/v1/jobs/headers": "no-store",  # an ended job: the file's bytes as they are
        "/api/v1/jobs": "no-store",
        "/api/v1/queue": "no-store",
        "/api/v1/health": "no-store",
        "/api/v1/jobs/nosuch": "no-store",  # errors too
        "/api/v1/jobs/headers/files/probe.txt": "private, no-cache",
        "/metrics": "no-store",
    }
    for path, cache in expected_cache.items():
        status, h, _ = request(guarded.api, "GET", path)
        assert h["x-content-type-options"] == "nosniff", path
        assert h["x-frame-options"] == "DENY", path
        assert "frame-ancestors 'none'" in h["content-security-policy"], path
        assert h["cache-control"] == cache, (path, h["cache-control"])
    _, h, _ = request(guarded.api, "GET", "/")
    assert "script-src" not in h["content-security-policy"] and "default-src 'self'" in h["content-security-policy"]


# -- tokens in URLs ------------------------------------------------------------------------
def test_access_token_in_the_query_is_for_reads_only(tmp_path):
    token = "s3cret-token-0123456789"
    d = Daemon(tmp_path / "spool", workers=["cpu"], VIDSPOOL_API__TOKENS=json.dumps([token])).start()
    try:
        status, _, raw = request(d.api, "POST", f"/api/v1/jobs?access_token={token}",
                                 json.dumps({**JOB, "id": "q"}).encode(), {"Content-Type": "application/json"})
        assert status == 401, raw
        status, _, raw = request(d.api, "DELETE", f"/api/v1/jobs/q?access_token={token}")
        assert status == 401
        assert request(d.api, "GET", f"/api/v1/jobs?access_token={token}")[0] == 200
        status, _, _ = post_job(d.api, {**JOB, "id": "h"}, Authorization=f"Bearer {token}")
        assert status == 202
    finally:
        d.stop()


# -- slow and numerous connections ------------------------------------------------------------
def connect(api: str) -> socket.socket:
    s = socket.create_connection(hostport(api), timeout=10)
    return s


def closed_by_server(s: socket.socket, within: float) -> tuple[bool, bytes]:
    """Reads until the server closes (True) or `within` seconds pass (False)."""
    s.settimeout(0.2)
    got = b""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def test_slow_request_heads_and_idle_connections_are_closed(guarded):
    socks = [connect(guarded.api) for _ in range(30)]
    for i, s in enumerate(socks):
        if i % 2:  # a head that never ends (slowloris); the others send nothing at all
            s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")
    started = time.monotonic()
    assert request(guarded.api, "GET", "/api/v1/health")[0] == 200  # served meanwhile
    for s in socks:
        if (s.fileno() % 3) == 0:
            s.sendall(b"b")  # trickling bytes does not buy more time
    results = [closed_by_server(s, 8) for s in socks]
    assert all(closed for closed, _ in results), "connections still open after the read timeout"
    assert time.monotonic() - started < 8
    for s in socks:
        s.close()


def test_a_body_that_stops_arriving_gets_408(guarded):
    s = connect(guarded.api)
    s.sendall(b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Content-Length: 1000\r\n\r\n{\"kind\": ")
    started = time.monotonic()
    closed, got = closed_by_server(s, 10)
    assert closed and got.startswith(b"HTTP/1.1 408"), got[:200]
    assert b"request_timeout" in got and 1.5 < time.monotonic() - started < 8
    s.close()
    # The same for a multipart upload that stalls in the middle of a file.
    s = connect(guarded.api)
    s.sendall(b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=XX\r\n"
              b"Content-Length: 100000\r\n\r\n--XX\r\nContent-Disposition: form-data; name=\"job\"\r\n\r\n"
              b"{\"kind\": \"probe\"}\r\n--XX\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.bin\"\r\n\r\nabc")
    closed, got = closed_by_server(s, 10)
    assert closed and got.startswith(b"HTTP/1.1 408"), got[:200]
    s.close()
    wait_for(lambda: not [n for n in os.listdir(guarded.root / "inbox") if n.startswith(".api-")], 5,
             "the upload's staging folder to be removed")


def test_connections_over_the_cap_get_503(guarded):
    socks = [connect(guarded.api) for _ in range(60)]
    refused = 0
    for s in socks:
        s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    for s in socks:
        s.settimeout(5)
        head = s.recv(200)
        if head.startswith(b"HTTP/1.1 503"):
            refused += 1
            assert b"max_connections" in head + s.recv(500)
        else:
            assert head.startswith(b"HTTP/1.1 200"), head
    assert 20 <= refused <= 25, refused  # 40 may be open (a few may have closed in between)
    for s in socks:
        s.close()
    wait_for(lambda: request(guarded.api, "GET", "/api/v1/health")[0] == 200, 5, "the API after the burst")
    _, _, metrics = request(guarded.api, "GET", "/metrics")
    line = next(ln for ln in metrics.decode().splitlines() if ln.startswith("vidspool_api_connections_refused_total"))
    assert float(line.split()[-1]) >= refused


def test_event_streams_are_capped(guarded):
    streams = []
    for _ in range(3):
        s = connect(guarded.api)
        s.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        s.settimeout(5)
        assert s.recv(100).startswith(b"HTTP/1.1 200")
        streams.append(s)
    status, h, raw = request(guarded.api, "GET", "/api/v1/events")
    assert status == 503 and "max_event_streams" in json.loads(raw)["error"]["message"]
    streams.pop().close()  # a client that goes away frees its slot within a second or so
    wait_for(lambda: request(guarded.api, "GET", "/api/v1/events?job=none", headers={"Connection": "close"},
                             read=False) == 200, 5, "a free event-stream slot")
    for s in streams:
        s.close()


# -- file descriptors ------------------------------------------------------------------------
def start_with_nofile(root, soft: int, hard: int) -> Daemon:
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    d = Daemon(root, workers=["cpu"])
    d.root.mkdir(parents=True, exist_ok=True)
    d._log = open(d.log_path, "ab")
    d.proc = subprocess.Popen([sys.executable, "-m", "daemon", "run"], cwd=REPO, env=base_env(**d.settings),
                              stdout=d._log, stderr=subprocess.STDOUT, preexec_fn=limit)
    d.wait_ready()
    return d


def soft_nofile(pid: int) -> int:
    for line in open(f"/proc/{pid}/limits"):
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no Max open files line")


def test_soft_file_limit_is_raised_to_the_hard_limit(tmp_path):
    d = start_with_nofile(tmp_path / "spool", 256, 4096)
    try:
        assert soft_nofile(d.proc.pid) == 4096
    finally:
        d.stop()


def test_many_clients_under_a_low_file_limit_do_not_stop_spool_work(tmp_path):
    d = start_with_nofile(tmp_path / "spool", 220, 220)
    socks = []
    try:
        for _ in range(400):  # far more than the descriptors left
            try:
                socks.append(connect(d.api))
            except OSError:
                break
        drop_json(d.root / "inbox", "under-load", {"kind": "probe", "params": {"seconds": 0.2}})
        doc = wait_status(d.root, "under-load", timeout=30, daemon=d)
        assert doc["state"] == "completed", doc
        assert (d.root / "outbox" / "under-load" / "probe.txt").is_file()
        hb = d.heartbeat
        assert hb.get("state") != "stopped"
    finally:
        for s in socks:
            s.close()
    try:
        wait_for(lambda: request(d.api, "GET", "/api/v1/health")[0] == 200, 10, "health after the clients left")
        events = d.log_events()
        assert any(e.get("event") == "api.connections_capped" for e in events)
        assert not any(e.get("event") == "spool.unavailable" for e in events), "spool reported unavailable"
        assert len(d.log_path.read_bytes()) < 200_000, "the log was flooded"
    finally:
        d.stop()
