"""Every endpoint of SPEC §6 against a real daemon process: shapes, errors, auth, uploads,
Range, path safety, live events, metrics, and 50 clients submitting 1,000 jobs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import aiohttp
import pytest
from PIL import Image

from tests.support import REPO, Daemon, base_env, wait_all_final, wait_status

READ_TOKEN = "read-only-token-0123456789"
FULL_TOKEN = "full-access-token-0123456789"


def call(base: str, method: str, path: str, body=None, headers: dict | None = None, raw: bool = False):
    """(status, headers, parsed body) of one request; never raises on HTTP errors."""
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers or {})
    if data is not None and "Content-Type" not in (headers or {}):
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            payload = r.read()
            return r.status, r.headers, payload if raw else _json(payload)
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        return exc.code, exc.headers, payload if raw else _json(payload)


def _json(payload: bytes):
    try:
        return json.loads(payload)
    except ValueError:
        return payload


def slideshow(**params) -> dict:
    return {"kind": "slideshow", "params": {"slides": ["hello"], "seconds_per_slide": 1, "width": 160, "height": 120, "fps": 5, **params}}


@pytest.fixture(scope="module")
def api_daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("api") / "spool", workers=["cpu", "cpu"], VIDSPOOL_API__MAX_QUEUED_JOBS="100000").start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def auth_daemon(tmp_path_factory):
    base = tmp_path_factory.mktemp("auth")
    tokens_file = base / "tokens"
    tokens_file.write_text(f"# operators\n{FULL_TOKEN}\n")
    d = Daemon(base / "spool", workers=["cpu"],
               VIDSPOOL_API__TOKENS=json.dumps([{"token": READ_TOKEN, "scopes": ["read"]}]),
               VIDSPOOL_API__TOKENS_FILE=str(tokens_file)).start()
    yield d
    d.stop()


# -- shapes ---------------------------------------------------------------------------------


def test_every_endpoint_answers_with_its_documented_shape(api_daemon):
    base = api_daemon.api
    assert call(base, "GET", "/api/v1/health")[2] == {"status": "ok"}
    status, _, info = call(base, "GET", "/api/v1/info")
    assert status == 200 and {"version", "host", "devices", "kinds", "models", "presets", "limits"} <= set(info)
    assert "slideshow" in info["kinds"] and info["devices"] == ["cpu:0", "cpu:1"]
    status, _, queue = call(base, "GET", "/api/v1/queue")
    assert status == 200 and len(queue["devices"]) == 2 and isinstance(queue["queued"], list)
    assert {"device", "busy", "job", "models", "memory"} <= set(queue["devices"][0])

    status, _, sub = call(base, "POST", "/api/v1/jobs", {**slideshow(), "id": "shape", "labels": {"team": "a"}})
    assert status == 202 and sub == {"id": "shape", "state": "submitted", "status_url": "/api/v1/jobs/shape"}
    doc = wait_status(api_daemon.root, "shape", timeout=60, daemon=api_daemon)
    assert doc["state"] == "completed"
    status, _, got = call(base, "GET", "/api/v1/jobs/shape")
    assert status == 200 and got["id"] == "shape" and got["result"]["files"][0]["url"] == "/api/v1/jobs/shape/files/video.mp4"
    status, _, page = call(base, "GET", "/api/v1/jobs?label=team%3Da&state=completed&kind=slideshow")
    assert status == 200 and [j["id"] for j in page["jobs"]] == ["shape"] and page["next_cursor"] is None

    status, headers, body = call(base, "GET", "/api/v1/jobs/shape/download", raw=True)
    assert status == 200 and headers["Content-Type"] == "video/mp4" and body[4:8] == b"ftyp"
    status, headers, body = call(base, "GET", "/api/v1/jobs/shape/files/thumb.jpg", raw=True)
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    assert call(base, "GET", "/api/v1/models")[2] == {"models": []}
    status, headers, body = call(base, "GET", "/api/v1/openapi.json")
    assert status == 200 and body["openapi"].startswith("3.") and "/api/v1/jobs" in body["paths"]
    status, headers, body = call(base, "GET", "/", raw=True)
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"<html" in body.lower()


def test_errors_have_codes_and_messages(api_daemon):
    base = api_daemon.api

    def err(status, body):
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
        return status, body["error"]["code"]

    assert err(*call(base, "GET", "/api/v1/jobs/nope")[::2]) == (404, "not_found")
    assert err(*call(base, "DELETE", "/api/v1/jobs/nope")[::2]) == (404, "not_found")
    assert err(*call(base, "GET", "/api/v1/jobs?state=bogus")[::2]) == (400, "bad_request")
    assert err(*call(base, "GET", "/api/v1/jobs?limit=0")[::2]) == (400, "bad_request")
    assert err(*call(base, "GET", "/api/v1/jobs?limit=x")[::2]) == (400, "bad_request")
    assert err(*call(base, "POST", "/api/v1/jobs", b"{not json")[::2]) == (400, "invalid_job")
    assert err(*call(base, "POST", "/api/v1/jobs", [1, 2])[::2]) == (400, "invalid_job")
    assert err(*call(base, "POST", "/api/v1/jobs", b"x" * 1_100_000)[::2]) == (413, "too_large")
    assert err(*call(base, "POST", "/api/v1/models/nope/load")[::2]) == (404, "not_found")
    assert err(*call(base, "GET", "/api/v1/nothing-here")[::2]) == (404, "not_found")
    assert err(*call(base, "PUT", "/api/v1/jobs")[::2]) == (405, "method_not_allowed")
    # A job that ended cannot be canceled; an invalid one is accepted, then fails like a drop.
    call(base, "POST", "/api/v1/jobs", {**slideshow(), "id": "ended"})
    wait_status(api_daemon.root, "ended", timeout=60)
    assert err(*call(base, "DELETE", "/api/v1/jobs/ended")[::2]) == (409, "conflict")
    status, _, sub = call(base, "POST", "/api/v1/jobs", {"kind": "slideshow", "params": {"fps": "fast"}})
    assert status == 202
    doc = wait_status(api_daemon.root, sub["id"], timeout=30)
    assert doc["state"] == "failed" and doc["error"]["code"] == "invalid_job" and "params.fps" in doc["error"]["message"]


def test_cancel_over_the_api(api_daemon):
    base = api_daemon.api
    call(base, "POST", "/api/v1/jobs", {**slideshow(seconds_per_slide=60, width=640, height=480, fps=25), "id": "to-cancel"})
    wait_status(api_daemon.root, "to-cancel", states={"running"}, timeout=30)
    status, _, body = call(base, "DELETE", "/api/v1/jobs/to-cancel")
    assert status == 202 and body["id"] == "to-cancel"
    assert wait_status(api_daemon.root, "to-cancel", timeout=30)["state"] == "canceled"


def test_ids_are_reserved_when_the_api_answers(api_daemon):
    """Two submissions of one id get two ids at once, and each status is where it was said."""
    base = api_daemon.api
    ids = [call(base, "POST", "/api/v1/jobs", {**slideshow(), "id": "twin"})[2]["id"] for _ in range(3)]
    assert ids == ["twin", "twin-2", "twin-3"]
    docs = wait_all_final(api_daemon.root, ids, timeout=60)
    assert all(d["state"] == "completed" and d["id"] == i for i, d in docs.items())


# -- uploads and files ---------------------------------------------------------------------


def multipart(base: str, job: dict | None, files: dict[str, bytes], headers: dict | None = None):
    async def go():
        form = aiohttp.FormData()
        if job is not None:
            form.add_field("job", json.dumps(job), content_type="application/json")
        for name, data in files.items():
            form.add_field("file", data, filename=name, content_type="application/octet-stream")
        async with aiohttp.ClientSession() as s:
            async with s.post(base + "/api/v1/jobs", data=form, headers=headers or {}) as r:
                return r.status, await r.json()
    return asyncio.run(go())


def png(tmp_path, color) -> bytes:
    path = tmp_path / f"{color}.png"
    Image.new("RGB", (200, 150), color).save(path)
    return path.read_bytes()


def test_multipart_upload_streams_files_into_the_job(api_daemon, tmp_path):
    job = {"kind": "slideshow", "inputs": {"images": ["red.png", "blue.png"]},
           "params": {"seconds_per_slide": 1, "width": 160, "height": 120, "fps": 5}}
    status, body = multipart(api_daemon.api, job, {"red.png": png(tmp_path, "red"), "blue.png": png(tmp_path, "blue")})
    assert status == 202, body
    doc = wait_status(api_daemon.root, body["id"], timeout=60)
    assert doc["state"] == "completed", doc["error"]
    assert sorted(p.name for p in (api_daemon.root / "outbox" / body["id"] / "input").iterdir()) == ["blue.png", "job.json", "red.png"]
    # Bad uploads: no job field, a file name that is a path, and one over the size limit.
    status, body = multipart(api_daemon.api, None, {"red.png": b"x"})
    assert status == 400 and "needs a `job` field" in body["error"]["message"]
    # A file name that is a path is cut to its last part, inside the staging folder.
    boundary = "vidspoolboundary"
    raw = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"job\"\r\n\r\n"
           f"{json.dumps({**job, 'id': 'pathname', 'inputs': {'images': ['red.png']}})}\r\n"
           f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../red.png\"\r\n"
           f"Content-Type: image/png\r\n\r\n").encode() + png(tmp_path, "red") + f"\r\n--{boundary}--\r\n".encode()
    status, _, body = call(api_daemon.api, "POST", "/api/v1/jobs", raw,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 202, body
    assert wait_status(api_daemon.root, "pathname", timeout=60)["state"] == "completed"
    assert not (api_daemon.root / "red.png").exists() and not (api_daemon.root.parent / "red.png").exists()
    status, body = multipart(api_daemon.api, job, {"../../etc/passwd": b"x"})
    assert status == 400, body  # aiohttp's client percent-encodes it: refused, not decoded
    status, body = multipart(api_daemon.api, job, {".hidden": b"x"})
    assert status == 400 and body["error"]["code"] == "bad_request"
    assert not list((api_daemon.root / "inbox").glob(".api-*")), "no staging folder is left behind"


def test_upload_over_the_input_limit_is_413(tmp_path):
    d = Daemon(tmp_path / "spool", workers=["cpu"], VIDSPOOL_LIMITS__INPUT_BYTES="100000").start()
    try:
        job = {"kind": "slideshow", "inputs": {"images": ["big.png"]}}
        status, body = multipart(d.api, job, {"big.png": b"\0" * 300_000})
        assert status == 413 and body["error"]["code"] == "too_large" and "input_bytes" in body["error"]["message"]
        assert sorted(p.name for p in (d.root / "inbox").iterdir()) == ["cards", "slideshow"], "nothing left in the inbox"
        assert [p.name for p in (d.root / "outbox").iterdir()] == [], "no id is left reserved"
    finally:
        d.stop()


def test_range_requests_and_paths_never_leave_the_outbox(api_daemon):
    base = api_daemon.api
    call(base, "POST", "/api/v1/jobs", {**slideshow(), "id": "ranged"})
    wait_status(api_daemon.root, "ranged", timeout=60)
    full = call(base, "GET", "/api/v1/jobs/ranged/files/video.mp4", raw=True)[2]
    status, headers, part = call(base, "GET", "/api/v1/jobs/ranged/files/video.mp4", headers={"Range": "bytes=100-199"}, raw=True)
    assert status == 206 and part == full[100:200] and headers["Content-Range"] == f"bytes 100-199/{len(full)}"
    status, _, tail = call(base, "GET", "/api/v1/jobs/ranged/files/video.mp4", headers={"Range": "bytes=-50"}, raw=True)
    assert status == 206 and tail == full[-50:]
    assert call(base, "GET", "/api/v1/jobs/ranged/files/video.mp4", headers={"Range": f"bytes={len(full) + 10}-"})[0] == 416
    (api_daemon.root / "secret.txt").write_text("nope")
    for path in ["/api/v1/jobs/ranged/files/..%2F..%2Fsecret.txt", "/api/v1/jobs/ranged/files/%2e%2e%2fstatus.json",
                 "/api/v1/jobs/..%2F..%2Fsecret.txt/download", "/api/v1/jobs/%2e%2e/files/secret.txt",
                 "/api/v1/jobs/ranged/files/%2Fetc%2Fpasswd", "/api/v1/jobs/ranged/files/status.json",
                 "/api/v1/jobs/ranged/files/input", "/api/v1/jobs/..%2F..%2F/files/secret.txt"]:
        status, _, body = call(base, "GET", path, raw=True)
        assert status in (400, 404), (path, status)
        assert b"nope" not in body and b"root:" not in body


# -- events -----------------------------------------------------------------------------------


async def read_events(url: str, count: int, headers: dict | None = None, timeout: float = 30) -> list[dict]:
    events, current = [], {}
    async with aiohttp.ClientSession() as s:
        async with s.get(url, headers=headers or {}, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            async for raw in r.content:
                line = raw.decode().rstrip("\n")
                if not line:
                    if current:
                        events.append(current)
                        current = {}
                        if len(events) >= count:
                            return events
                    continue
                if line.startswith(":"):
                    continue
                key, _, value = line.partition(": ")
                current[key] = json.loads(value) if key == "data" else value
    return events


def test_events_stream_live_progress(api_daemon):
    base = api_daemon.api

    async def scenario():
        listener = asyncio.create_task(read_events(base + "/api/v1/events?job=live", 3))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(call, base, "POST", "/api/v1/jobs", {**slideshow(), "id": "live"})
        return await listener

    first = asyncio.run(scenario())
    assert [e["data"]["state"] for e in first] == ["queued", "running", "running"]
    assert all(e["event"] == "status" and e["data"]["id"] == "live" for e in first)
    ids = [int(e["id"].rsplit("-", 1)[1]) for e in first]
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_events_replay_and_reset(api_daemon):
    base = api_daemon.api
    call(base, "POST", "/api/v1/jobs", {**slideshow(), "id": "replayed"})
    wait_status(api_daemon.root, "replayed", timeout=60)

    async def collect(headers):
        events = []
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(base + "/api/v1/events?job=replayed", headers=headers,
                                 timeout=aiohttp.ClientTimeout(total=2)) as r:
                    async for raw in r.content:
                        line = raw.decode().strip()
                        if line.startswith(("id:", "event:", "data:")):
                            events.append(line)
        except asyncio.TimeoutError:
            pass
        return events

    run = json.loads((api_daemon.root / "outbox" / "replayed" / "status.json").read_text())
    assert run["state"] == "completed"
    lines = asyncio.run(collect({"Last-Event-ID": "0"}))  # not this run's id: reset
    assert "event: reset" in lines
    first_id = next(l for l in asyncio.run(collect({"Last-Event-ID": "0"})) if l.startswith("id:"))[4:]
    run_tag = first_id.rsplit("-", 1)[0]
    lines = asyncio.run(collect({"Last-Event-ID": f"{run_tag}-0"}))
    states = [json.loads(l[6:])["state"] for l in lines if l.startswith("data:")]
    assert states[0] == "queued" and states[-1] == "completed" and "event: reset" not in lines


# -- auth -----------------------------------------------------------------------------------------


def test_tokens_and_scopes(auth_daemon):
    base = auth_daemon.api
    read = {"Authorization": f"Bearer {READ_TOKEN}"}
    full = {"Authorization": f"Bearer {FULL_TOKEN}"}
    assert call(base, "GET", "/api/v1/health")[0] == 200  # open
    assert call(base, "GET", "/")[0] == 200  # the page itself holds no data
    for path in ["/api/v1/info", "/api/v1/queue", "/api/v1/jobs", "/api/v1/models", "/metrics", "/api/v1/openapi.json"]:
        status, headers, body = call(base, "GET", path)
        assert status == 401 and body["error"]["code"] == "unauthorized" and headers["WWW-Authenticate"].startswith("Bearer"), path
        assert call(base, "GET", path, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert call(base, "GET", path, headers=read)[0] == 200, path
    status, _, body = call(base, "POST", "/api/v1/jobs", slideshow(), headers=read)
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, _, body = call(base, "POST", "/api/v1/jobs", {**slideshow(), "id": "authed"}, headers=full)
    assert status == 202
    wait_status(auth_daemon.root, "authed", timeout=60)
    assert call(base, "GET", f"/api/v1/jobs/authed/files/video.mp4?access_token={READ_TOKEN}", raw=True)[0] == 200
    assert call(base, "DELETE", "/api/v1/jobs/authed", headers=read)[0] == 403
    log = auth_daemon.log_path.read_text()
    assert READ_TOKEN not in log and FULL_TOKEN not in log


def test_a_public_address_needs_tokens(tmp_path):
    env = base_env(VIDSPOOL_SPOOL__ROOT=str(tmp_path / "spool"), VIDSPOOL_API__HOST="0.0.0.0")
    out = subprocess.run([sys.executable, "-m", "daemon", "run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "api" in out.stderr and "needs [api] tokens" in out.stderr


# -- metrics ----------------------------------------------------------------------------------------


def test_metrics_in_prometheus_text(api_daemon):
    from prometheus_client.parser import text_string_to_metric_families

    call(api_daemon.api, "POST", "/api/v1/jobs", {**slideshow(), "id": "measured"})
    wait_status(api_daemon.root, "measured", timeout=60)
    status, headers, body = call(api_daemon.api, "GET", "/metrics", raw=True)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    completed = [s for s in families["vidspool_jobs"].samples if s.labels == {"kind": "slideshow", "state": "completed"} and s.name.endswith("_total")]
    assert completed and completed[0].value >= 1
    assert any(s.name.endswith("_count") and s.value >= 1 for s in families["vidspool_job_duration_seconds"].samples)
    assert any(s.name.endswith("_count") and s.value >= 1 for s in families["vidspool_queue_wait_seconds"].samples)
    assert {s.labels["device"] for s in families["vidspool_worker_restarts"].samples} == {"cpu:0", "cpu:1"}
    assert any(s.labels.get("route") == "/api/v1/jobs" and s.labels.get("method") == "POST"
               for s in families["vidspool_api_requests"].samples)
    assert {s.labels["state"] for s in families["vidspool_jobs_now"].samples} == {"queued", "running"}


# -- load ---------------------------------------------------------------------------------------------


def test_fifty_clients_submit_a_thousand_jobs(api_daemon):
    async def client(session, n, ids):
        for i in range(20):
            async with session.post(api_daemon.api + "/api/v1/jobs",
                                    json={"kind": "probe", "id": f"load-{n}-{i}" if i % 2 else "load", "labels": {"c": str(n)}}) as r:
                assert r.status == 202, await r.text()
                ids.append((await r.json())["id"])

    async def main():
        ids: list[str] = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as s:
            await asyncio.gather(*(client(s, n, ids) for n in range(50)))
        return ids

    started = time.monotonic()
    ids = asyncio.run(main())
    submitted = time.monotonic() - started
    assert len(ids) == 1000 and len(set(ids)) == 1000, "every submission got its own id"
    docs = wait_all_final(api_daemon.root, ids, timeout=300, daemon=api_daemon)
    assert all(d["state"] == "completed" for d in docs.values())
    print(f"1000 submissions from 50 clients in {submitted:.2f}s")


def test_a_full_queue_answers_429(tmp_path):
    d = Daemon(tmp_path / "spool", workers=["cpu"], VIDSPOOL_API__MAX_QUEUED_JOBS="2").start()
    try:
        answers = []
        for i in range(6):
            status, headers, body = call(d.api, "POST", "/api/v1/jobs", {"kind": "probe", "id": f"q{i}", "params": {"seconds": 30}})
            answers.append(status)
            if status == 429:
                assert body["error"]["code"] == "queue_full" and headers["Retry-After"] == "10"
            time.sleep(0.3)  # let the daemon queue what it was given
        assert answers[:3] == [202, 202, 202] and 429 in answers[3:], answers
    finally:
        d.stop()


def test_an_ended_status_is_served_as_the_file_is_now(api_daemon):
    """GET /jobs/{id} keeps an ended status's bytes (issue 27 item 9), checked by the file's
    signature: a status replaced, or rewritten in place at the same size, is served anew."""
    folder = api_daemon.root / "outbox" / "cached-status"
    folder.mkdir()

    def status(message: str) -> bytes:
        return json.dumps({"id": "cached-status", "kind": "probe", "state": "completed", "message": message}).encode()

    def served() -> bytes:
        return call(api_daemon.api, "GET", "/api/v1/jobs/cached-status", raw=True)[2]

    (folder / "status.json").write_bytes(status("first"))
    assert served() == status("first")
    time.sleep(1.2)  # older than a timestamp tick: now kept
    assert served() == served() == status("first")
    (folder / "next.json").write_bytes(status("again"))
    (folder / "next.json").rename(folder / "status.json")
    assert served() == status("again")
    time.sleep(1.2)
    assert served() == status("again")
    with open(folder / "status.json", "r+b") as f:  # the same size, written in place
        f.write(status("AGAIN"))
    assert served() == status("AGAIN")
