"""The five seed personalities beside a native API with tokens (issue 25: items 2, 5, 15),
on one real daemon: all five on loopback, `[api] tokens` set, jobs submitted natively with a
token and through each front.

- A personality answers only for the jobs submitted through it: a native job (completed
  with a video, running, queued) is answered by every id-taking route of every personality
  exactly as an id that never existed, and no list names it — anonymously, and on Visualizr
  (whose seed has bearer tokens) with a token too; each personality still answers its own.
- `[api] max_queued_jobs` holds on every submit path of every front: with the farm paused
  and the limit N, N+k parallel submissions through each leave exactly N queued, the rest
  answered in the seed's shape (429 where its document has one, else 503), and nothing of
  a refused request stays in the spool.
- No answer of any front (every route walked, native with a token, status documents, the
  event stream, the WebSocket) names a host path: the spool, the registry, a deliver_to
  folder, a default face, the hub cache or the repository.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
import requests
from PIL import Image

from contract.model_folders import hub_cache_dir
from tests.support import REPO, Daemon, all_personalities, base_env, drop_json, status, wait_for, wait_status

TOKEN = "native-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SMALL = {"width": 32, "height": 32, "num_frames": 5, "num_inference_steps": 2}
LIMIT = 6  # [api] max_queued_jobs
EXTRA = 3  # submissions beyond it, through each front
NAMES = ("heygem", "story", "paksatalker", "visualizr", "wan")


def face_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 96), (200, 160, 140)).save(buf, format="PNG")
    return buf.getvalue()


class Front:
    """One daemon: its native API, its five personalities and the folders it was given."""

    def __init__(self, daemon: Daemon, base: Path):
        self.daemon, self.base = daemon, base
        self.native = daemon.api
        wait_for(lambda: len(daemon.heartbeat.get("compat_urls") or {}) == len(NAMES), what="personalities listening")
        self.urls: dict[str, str] = daemon.heartbeat["compat_urls"]
        self.own: dict[str, str] = {}  # personality → the id of a job submitted through it
        self.answers: list[tuple[str, bytes]] = []  # every answer read, for the host-path check
        self.video = b""  # a native job's MP4 (for video-to-video)

    def call(self, method: str, url: str, **kw) -> requests.Response:
        r = requests.request(method, url, timeout=60, **kw)
        self.answers.append((f"{method} {url}", r.content))
        return r

    def native_call(self, method: str, path: str, **kw) -> requests.Response:
        return self.call(method, self.native + path, headers=AUTH, **kw)


def native_submit(front: Front, doc: dict) -> str:
    r = front.native_call("POST", "/api/v1/jobs", json=doc)
    assert r.status_code == 202, r.text
    return r.json()["id"]


@pytest.fixture(scope="module")
def front(tiny_models, tmp_path_factory):
    base = tmp_path_factory.mktemp("compat-security")
    registry = base / "registry"
    registry.mkdir()
    shutil.copytree(tiny_models / "wan-t2v", registry / "wan-reg")  # found in [registry] dir
    (base / "done").mkdir()
    face = base / "face.png"
    face.write_bytes(face_png())
    fronts = all_personalities(face, SMALL)
    settings = {
        "VIDSPOOL_API__TOKENS": json.dumps([TOKEN]),
        "VIDSPOOL_API__MAX_QUEUED_JOBS": str(LIMIT),
        "VIDSPOOL_REGISTRY__DIR": str(registry),
        # configured by path: a folder in the repository (its path must not show either)
        "VIDSPOOL_MODELS": json.dumps({"tiny": {"path": str(tiny_models / "wan-t2v"), "defaults": SMALL},
                                       "tiny-i2v": {"path": str(tiny_models / "wan-i2v"), "defaults": SMALL},
                                       "gone": {"path": str(base / "not-here"), "kinds": ["text-to-video"]}}),
        "VIDSPOOL_KINDS": json.dumps({"text-to-video": {"model": "tiny"}, "video-to-video": {"model": "tiny"},
                                      "image-to-video": {"model": "tiny-i2v"}}),
        "VIDSPOOL_CHARACTERS": json.dumps({"host": {"image": str(face), "prompt": "a host {action}", "model": "tiny-i2v"}}),
        "VIDSPOOL_PRESETS": json.dumps({
            **fronts["presets"],
            "delivered": {"kind": "probe", "deliver_to": str(base / "done")},
            "undeliverable": {"kind": "probe", "deliver_to": str(base / "no-such-folder"),
                              "deliver_retry_seconds": 3600},
        }),
        "VIDSPOOL_COMPAT": json.dumps(fronts["compat"]),
    }
    d = Daemon(base / "spool", workers=["cpu"], **settings).start()
    try:
        yield Front(d, base)
    finally:
        d.stop()


# -- jobs: native ones (with the token) and one through each personality ---------------------------

def submit_paths(front: Front) -> dict[str, list]:
    """Per front, a request to each of its submit endpoints (a callable sending it); the
    first one's answer names the job by the key in ID_KEY."""
    image = ("face.png", face_png(), "image/png")
    u = front.urls

    def post(url: str, headers: dict | None = None, **kw):
        return lambda: front.call("POST", url, headers=headers or {}, **kw)

    return {
        "native": [post(f"{front.native}/api/v1/jobs", AUTH, json={"kind": "probe"}),
                   post(f"{front.native}/api/v1/jobs", AUTH, files={"job": (None, '{"kind": "probe", "inputs": {"data": "d.txt"}}'),
                                                                     "file": ("d.txt", b"data", "text/plain")})],
        "heygem": [post(f"{u['heygem']}/api/generate", data={"text": "Hello."})],
        "story": [post(f"{u['story']}/api/v1/generate", json={"text": "Once. The end."})],
        "paksatalker": [post(f"{u['paksatalker']}/api/v1/generate/fusion-video", data={"text": "Hi."}, files={"image": image}),
                        post(f"{u['paksatalker']}/api/v1/generate/video-from-prompt", data={"prompt": "Hi."})],
        "visualizr": [post(f"{u['visualizr']}/api/v1/generate/video", AUTH, json={"prompt": "a fox"}),
                      post(f"{u['visualizr']}/api/v1/generate/video/from-image", AUTH, files={"image": image}),
                      post(f"{u['visualizr']}/api/v1/generate/character-animation", AUTH, json={"character_id": "host"})],
        "wan": [post(f"{u['wan']}/api/v1/generate/text-to-video", json={"prompt": "a sunset"}),
                post(f"{u['wan']}/api/v1/generate/image-to-video", files={"image": image}),
                post(f"{u['wan']}/api/v1/generate/video-to-video", data={"prompt": "snow"},
                     files={"video": ("clip.mp4", front.video, "video/mp4")})],
    }


ID_KEY = {"heygem": "task_id", "story": "job_id", "paksatalker": "task_id", "visualizr": "request_id", "wan": "job_id"}


@pytest.fixture(scope="module")
def jobs(front):
    """Native jobs, with ids in the personalities' own shapes: `video` (text-to-video, completed), `delivered` and `undelivered` (dropped
    for a preset whose deliver_to is there, and missing), `running` (runs on), `queued` (waits: the farm
    is paused); then one job through each personality (queued)."""
    root = front.daemon.root
    ids = {"video": native_submit(front, {"kind": "text-to-video", "id": "video_req_00ff00ff00ff00ff",
                                          "params": {"prompt": "a lighthouse", **SMALL}})}
    assert wait_status(root, ids["video"], timeout=180, daemon=front.daemon)["state"] == "completed"
    drop_json(root / "inbox" / "delivered", "delivered1", {})  # a preset's job: dropped in its inbox folder
    drop_json(root / "inbox" / "undeliverable", "undelivered1", {})
    ids["delivered"], ids["undelivered"] = "delivered1", "undelivered1"
    wait_for(lambda: ((status(root, ids["delivered"]) or {}).get("result") or {}).get("delivered"), 60, "delivered")
    wait_for(lambda: ((status(root, ids["undelivered"]) or {}).get("result") or {}).get("delivery_error"), 60,
             "delivery refused")
    ids["running"] = native_submit(front, {"kind": "probe", "id": "job_1700000000_abcdefabcdef", "params": {"seconds": 600}})
    wait_status(root, ids["running"], {"running"}, daemon=front.daemon)
    assert front.native_call("POST", "/api/v1/pause", json={"reason": "test"}).status_code == 200
    ids["queued"] = native_submit(front, {"kind": "probe", "id": "task_1700000000000000001"})
    wait_status(root, ids["queued"], {"queued"}, daemon=front.daemon)
    front.video = front.native_call("GET", f"/api/v1/jobs/{ids['video']}/download").content
    paths = submit_paths(front)
    for name in NAMES:
        r = paths[name][0]()
        assert r.status_code in (200, 202), (name, r.text)
        front.own[name] = r.json()[ID_KEY[name]]
    for job in front.own.values():
        wait_status(root, job, {"queued"}, daemon=front.daemon)
    return ids


# -- walking the personalities' routes ----------------------------------------------------------------

def id_routes(name: str, job: str) -> list[tuple[str, str]]:
    """Every route of a personality that takes a job id (or names one in a file name)."""
    return {
        "heygem": [("GET", f"/api/status/{job}"), ("GET", f"/api/download/{job}"), ("GET", f"/outputs/final_{job}.mp4")],
        "story": [("GET", f"/api/v1/status/{job}"), ("GET", f"/api/v1/download/{job}")],
        "paksatalker": [("GET", f"/api/v1/status/{job}"), ("GET", f"/api/v1/download/{job}.mp4")],
        "visualizr": [("GET", f"/api/v1/generate/status/{job}"), ("GET", f"/api/v1/assets/videos/{video_id(job)}"),
                      *[("GET", f"/assets/video/{video_id(job)}{suffix}") for suffix in (".mp4", "_thumb.jpg", "_preview.gif")],
                      ("DELETE", f"/api/v1/generate/{job}"), ("DELETE", f"/api/v1/assets/videos/{video_id(job)}")],
        "wan": [("GET", f"/api/v1/job/{job}"),
                *[("GET", f"/outputs/{prefix}_{job}.mp4") for prefix in ("text2video", "image2video", "video2video")]],
    }[name]


def list_routes(name: str) -> list[str]:
    """Every GET of a personality that lists jobs or describes the host."""
    return {
        "heygem": ["/", "/api/queue", "/api/info", "/api/health"],
        "story": ["/api/v1/jobs"],
        "paksatalker": ["/api/v1/capabilities", "/api/v1/expressions/capabilities", "/api/v1/voices", "/api/v1/languages"],
        "visualizr": ["/api/v1/assets/videos", "/api/v1/metrics", "/api/v1/health", "/api/v1/models", "/api/v1/models/tiny",
                      "/api/v1/models/wan-reg", "/api/v1/models/gone"],
        "wan": ["/health", "/api/v1/model/info", "/api/v1/models"],
    }[name]


def video_id(job: str) -> str:
    return "video_" + job[len("video_req_"):] if job.startswith("video_req_") else job


def answer(front: Front, name: str, method: str, path: str, headers: dict | None = None) -> tuple[int, str, bytes]:
    r = front.call(method, front.urls[name] + path, headers=headers or {})
    return r.status_code, r.headers.get("Content-Type", ""), r.content


def assert_unknown(front: Front, name: str, job: str, headers: dict | None = None) -> None:
    """Every id route of `name` answers `job` exactly as an id that never existed."""
    absent = job + "0"
    for (method, path), (_, absent_path) in zip(id_routes(name, job), id_routes(name, absent)):
        got = answer(front, name, method, path, headers)
        status_, kind, body = answer(front, name, method, absent_path, headers)
        body = body.replace(absent.encode(), job.encode()).replace(video_id(absent).encode(), video_id(job).encode())
        unknown = (status_, kind, body)
        assert got == unknown, f"{name} {method} {path} reveals job {job}: {got[0]} {got[2][:300]!r}"
        assert got[0] in (401, 404), (name, method, path, got)


def ws_messages(url: str, request_ids: list[str]) -> list[dict]:
    """Visualizr's WebSocket, with the token: the first answer to a subscription of each id."""

    async def run() -> list[dict]:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url.replace("http", "ws", 1) + "/api/v1/ws/generation", headers=AUTH) as ws:
                out = []
                for request_id in request_ids:
                    await ws.send_json({"type": "subscribe", "request_id": request_id})
                    out.append(await ws.receive_json(timeout=10))
                return out

    return asyncio.run(run())


# -- item 2: a personality answers only for its own jobs ---------------------------------------------

def test_no_personality_reveals_a_native_job_or_another_fronts(front, jobs):
    native = [jobs[k] for k in ("video", "running", "queued", "delivered")]
    for name in NAMES:
        others = [job for other, job in front.own.items() if other != name]
        for job in native + others:
            assert_unknown(front, name, job)  # anonymously
            if name == "visualizr":  # its seed has bearer tokens: with one, still only its own
                assert_unknown(front, name, job, AUTH)
        for path in list_routes(name):
            for headers in ({}, AUTH):
                _, _, body = answer(front, name, "GET", path, headers)
                for job in native + others:
                    assert job.encode() not in body, f"{name} GET {path} lists {job}"
    # Visualizr's DELETEs above touched nothing: the native jobs are as they were.
    assert status(front.daemon.root, jobs["running"])["state"] == "running"
    assert status(front.daemon.root, jobs["queued"])["state"] == "queued"
    video = front.native_call("GET", f"/api/v1/jobs/{jobs['video']}/download")
    assert video.status_code == 200 and video.headers["Content-Type"] == "video/mp4"
    # Its WebSocket: a native id is an unknown request, its own is answered.
    told = ws_messages(front.urls["visualizr"], [jobs["running"], jobs["video"], front.own["visualizr"]])
    assert [m["type"] for m in told] == ["error", "error", "progress"], told
    assert {m["error"]["code"] for m in told[:2]} == {"REQUEST_NOT_FOUND"}


def test_each_personality_answers_and_lists_its_own_jobs(front, jobs):
    own = front.own
    assert answer(front, "heygem", "GET", f"/api/status/{own['heygem']}")[0] == 200
    queue = json.loads(answer(front, "heygem", "GET", "/api/queue")[2])
    assert queue["queue"] == [own["heygem"]] and queue["queue_size"] == 1, queue
    gpu = queue["gpus"]["0"]
    assert gpu["busy"] and gpu["current_task"] is None, gpu  # busy with a job that is not HeyGem's
    assert answer(front, "story", "GET", f"/api/v1/status/{own['story']}")[0] == 200
    assert list(json.loads(answer(front, "story", "GET", "/api/v1/jobs")[2])["jobs"]) == [own["story"]]
    assert answer(front, "paksatalker", "GET", f"/api/v1/status/{own['paksatalker']}")[0] == 200
    assert answer(front, "visualizr", "GET", f"/api/v1/generate/status/{own['visualizr']}", AUTH)[0] == 200
    assert answer(front, "visualizr", "GET", f"/api/v1/generate/status/{own['visualizr']}")[0] == 401
    assert answer(front, "wan", "GET", f"/api/v1/job/{own['wan']}")[0] == 200


# -- item 5: [api] max_queued_jobs on every submit path -------------------------------------------

def assert_queue_full(name: str, r: requests.Response) -> None:
    """The seed's answer to a full queue: 429 where its document has one (Wan, and the
    native API), else 503; in its error shape."""
    body = r.json()
    expected = {
        "native": (429, lambda b: b["error"]["code"] == "queue_full"),
        "heygem": (503, lambda b: b["success"] is False and "max_queued_jobs" in b["error"]),
        "story": (503, lambda b: set(b) == {"error"} and "max_queued_jobs" in b["error"]),
        "paksatalker": (503, lambda b: b["success"] is False and "max_queued_jobs" in b["detail"]),
        "visualizr": (503, lambda b: b["error"]["code"] == "QUEUE_FULL"),
        "wan": (429, lambda b: b == {"error": "Too many concurrent requests. Please try again later."}),
    }[name]
    assert r.status_code == expected[0] and expected[1](body), (name, r.status_code, body)
    if name in ("native", "visualizr"):
        assert r.headers["Retry-After"] == "10"


def queued_ids(front: Front) -> list[str]:
    return [q["id"] for q in front.native_call("GET", "/api/v1/queue").json()["queued"]]


def test_every_submit_path_holds_max_queued_jobs(front, jobs):
    root = front.daemon.root
    for name, paths in submit_paths(front).items():
        for job in queued_ids(front):  # an empty queue (the farm stays paused)
            assert front.native_call("DELETE", f"/api/v1/jobs/{job}").status_code == 202
        wait_for(lambda: not queued_ids(front), what="an empty queue")
        folders, inbox = len(os.listdir(root / "outbox")), sorted(os.listdir(root / "inbox"))  # presets' folders
        requests_ = [paths[i % len(paths)] for i in range(LIMIT + EXTRA)]
        with ThreadPoolExecutor(len(requests_)) as pool:
            answers = list(pool.map(lambda send: send(), requests_))
        taken = [r for r in answers if r.status_code < 300]
        assert len(taken) == LIMIT, (name, [(r.status_code, r.text[:120]) for r in answers])
        for r in answers:
            if r.status_code >= 300:
                assert_queue_full(name, r)
        for send in paths:  # each endpoint of this front, with the queue full
            assert_queue_full(name, send())
        wait_for(lambda: len(queued_ids(front)) == LIMIT and not any(
            n.startswith(".") for n in os.listdir(root / "inbox")), what=f"{name}: {LIMIT} queued")
        assert len(os.listdir(root / "outbox")) == folders + LIMIT, name  # nothing of a refused request
        assert sorted(os.listdir(root / "inbox")) == inbox, name  # no staging, no drop left
    assert status(root, jobs["running"])["state"] == "running"


# -- item 15: no answer names a host path ---------------------------------------------------------------

def sse_replay(front: Front) -> bytes:
    """The native event stream from its first event (the ring holds every status so far)."""
    with requests.get(front.native + "/api/v1/events", headers={**AUTH, "Last-Event-ID": "none-0"}, stream=True,
                      timeout=10) as r:  # an unknown id: `reset` says the current run
        run = next(line for line in r.iter_lines() if line.startswith(b"id: ")).decode()[4:].rpartition("-")[0]
    body = b""
    with requests.get(front.native + "/api/v1/events", headers={**AUTH, "Last-Event-ID": f"{run}-0"}, stream=True,
                      timeout=(10, 1)) as r:
        try:
            for chunk in r.iter_content(None):  # the replay, then a second of quiet
                body += chunk
        except requests.ConnectionError:
            pass
    assert body.count(b"event: status") > 20 and b'"delivered": [' in body, body[-500:]
    return body


def test_no_answer_of_any_front_names_a_host_path(front, jobs, tiny_models):
    root = front.daemon.root
    # A job whose model's folder is missing fails saying so: through Visualizr and natively.
    for job in [*queued_ids(front), jobs["running"]]:  # the worker free, the farm running again
        assert front.native_call("DELETE", f"/api/v1/jobs/{job}").status_code == 202
    front.native_call("POST", "/api/v1/resume")
    r = front.call("POST", front.urls["visualizr"] + "/api/v1/generate/video", headers=AUTH,
                   json={"prompt": "a fox", "model": "gone"})
    assert r.status_code == 200, r.text
    failed = [r.json()["request_id"], native_submit(front, {"kind": "text-to-video", "model": "gone", "params": {"prompt": "x"}})]
    for job in failed:
        assert wait_status(root, job, daemon=front.daemon)["error"]["code"] == "model_not_found"
    gone = failed[1]
    answer(front, "visualizr", "GET", f"/api/v1/generate/status/{failed[0]}", AUTH)
    for name in NAMES:
        for headers in ({}, AUTH):
            for path in list_routes(name):
                answer(front, name, "GET", path, headers)
            for method, path in id_routes(name, front.own[name]):
                if method == "GET":
                    answer(front, name, method, path, headers)
    for path in ("/api/v1/info", "/api/v1/models", "/api/v1/queue", "/api/v1/jobs?limit=1000", "/api/v1/stats",
                 "/metrics", "/api/v1/openapi.json", *[f"/api/v1/jobs/{j}" for j in [*jobs.values(), gone, *front.own.values()]]):
        assert front.native_call("GET", path).status_code == 200, path
    front.answers.append(("native GET /api/v1/events", sse_replay(front)))
    front.answers.append(("visualizr WebSocket", json.dumps(ws_messages(front.urls["visualizr"], [front.own["visualizr"]])).encode()))
    # The operator's CLI still says where each model is.
    listed = subprocess.run([sys.executable, "-m", "daemon", "models", "list"], cwd=REPO, capture_output=True, text=True,
                            env=base_env(**{**front.daemon.settings, "VIDSPOOL_API__PORT": str(urlsplit(front.native).port)}),
                            timeout=60)
    assert str((front.base / "registry" / "wan-reg").resolve()) in listed.stdout, listed
    host_paths = {str(p) for p in (front.base, REPO, tiny_models, hub_cache_dir()) for p in (p, p.resolve())}
    leaks = [(where, path) for where, body in front.answers for path in host_paths
             if path.encode() in body or json.dumps(path)[1:-1].encode() in body]
    assert not leaks, "\n".join(f"{where} names {path}" for where, path in leaks)


def test_host_paths_are_shortened_as_whole_paths_only():
    from daemon.config import load_settings
    from daemon.view.hostpaths import HostPaths

    settings = load_settings(None, spool={"root": "/srv/spool"}, registry={"dir": "/srv/models"},
                             presets={"p": {"kind": "tts", "deliver_to": "/mnt/done"}})
    paths = HostPaths(lambda: settings)
    assert paths.text("model 'x': /srv/models/wan does not exist") == "model 'x': registry/wan does not exist"
    assert paths.text("[Errno 2] '/mnt/done/a.mp4' (/srv/spool)") == "[Errno 2] 'deliver_to/a.mp4' (spool)"
    for kept in ("/srv/spool2/x", "http://h:1/srv/spool/x", "see /api/v1/jobs"):  # not one of them
        assert paths.text(kept) == kept
    assert (paths.path("/srv/models/a/b"), paths.path("/usr/lib/x.so"), paths.path(None)) == ("registry/a/b", "x.so", None)
