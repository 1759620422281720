"""All five seed personalities on two daemons sharing one spool: a job submitted through
daemon A's personality, A SIGKILLed and restarted, then status and download through A's
and through B's same personality: completed, one result, the same bytes; every such job is
an ordinary job in the native API."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from tests.chaos import StatusWatcher
from tests.support import REPO, Daemon, all_personalities, assert_exactly_once, base_env, wait_for

SMALL = {"width": 32, "height": 32, "num_frames": 5, "num_inference_steps": 2}


def face_png() -> bytes:
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).resize((128, 128)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def spool(tiny_models, tmp_path_factory):
    base = tmp_path_factory.mktemp("compat-shared")
    face = base / "face.png"
    face.write_bytes(face_png())
    fronts = all_personalities(face, SMALL)
    settings = {
        "VIDSPOOL_MODELS": json.dumps({"tiny": {"path": str(tiny_models / "wan-t2v")}}),
        "VIDSPOOL_KINDS": json.dumps({"text-to-video": {"model": "tiny"}}),
        "VIDSPOOL_PRESETS": json.dumps(fronts["presets"]),
        "VIDSPOOL_COMPAT": json.dumps(fronts["compat"]),
    }
    return base, face, settings


# Per seed: submit (base URL → id), status (base, id → (ended?, completed?)), download (base, id → bytes).
def heygem_submit(base):
    r = requests.post(f"{base}/api/generate", data={"text": "Hello from the shared spool."}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["task_id"]


def heygem_status(base, task):
    s = requests.get(f"{base}/api/status/{task}", timeout=10).json()
    return s["status"] in ("completed", "failed"), s["status"] == "completed"


def heygem_download(base, task):
    return requests.get(f"{base}/api/download/{task}", timeout=30)


def story_submit(base):
    r = requests.post(f"{base}/api/v1/generate", json={"text": "Once upon a time. The end."}, timeout=30)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def story_status(base, job):
    s = requests.get(f"{base}/api/v1/status/{job}", timeout=10).json()
    return s["status"] in ("completed", "failed"), s["status"] == "completed"


def story_download(base, job):
    return requests.get(f"{base}/api/v1/download/{job}", timeout=30)


def paksatalker_submit(base, face=None):
    r = requests.post(f"{base}/api/v1/generate/fusion-video", data={"text": "Hi there.", "resolution": "480p"},
                      files={"image": ("face.png", face_png(), "image/png")}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["task_id"]


def paksatalker_status(base, task):
    s = requests.get(f"{base}/api/v1/status/{task}", timeout=10).json()["data"]
    return s["status"] in ("completed", "failed"), s["status"] == "completed"


def paksatalker_download(base, task):
    return requests.get(f"{base}/api/v1/download/{task}.mp4", timeout=30)


def visualizr_submit(base):
    r = requests.post(f"{base}/api/v1/generate/video", json={"prompt": "a red fox in snow"}, timeout=30)
    assert r.status_code in (200, 202), r.text
    return r.json()["request_id"]


def visualizr_status(base, req):
    s = requests.get(f"{base}/api/v1/generate/status/{req}", timeout=10).json()
    return s["status"] in ("completed", "failed", "cancelled"), s["status"] == "completed"


def visualizr_download(base, req):
    s = requests.get(f"{base}/api/v1/generate/status/{req}", timeout=10).json()
    return requests.get(base + s["result"]["video_url"], timeout=30)


def wan_submit(base):
    r = requests.post(f"{base}/api/v1/generate/text-to-video", json={"prompt": "A beautiful sunset over the ocean"}, timeout=30)
    assert r.status_code in (200, 202), r.text
    return r.json()["job_id"]


def wan_status(base, job):
    s = requests.get(f"{base}/api/v1/job/{job}", timeout=10).json()
    return s["status"] in ("completed", "failed"), s["status"] == "completed"


def wan_download(base, job):
    s = requests.get(f"{base}/api/v1/job/{job}", timeout=10).json()
    return requests.get(f"{base}/outputs/{Path(s['output_path']).name}", timeout=30)


SEEDS = {name: (globals()[f"{name}_submit"], globals()[f"{name}_status"], globals()[f"{name}_download"])
         for name in ("heygem", "story", "paksatalker", "visualizr", "wan")}


def urls(d: Daemon) -> dict[str, str]:
    wait_for(lambda: len(d.heartbeat.get("compat_urls") or {}) == len(SEEDS), what="personalities listening")
    return d.heartbeat["compat_urls"]


def ffprobe_streams(data: bytes, tmp: Path) -> list[str]:
    path = tmp / "check.mp4"
    path.write_bytes(data)
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    return [s["codec_type"] for s in json.loads(out.stdout)["streams"]]


def test_submit_kill_restart_then_answers_from_both_hosts(spool, tmp_path):
    base, _, settings = spool
    root = base / "spool"
    a = Daemon(root, host="host-a", workers=["cpu"], **settings).start()
    b = Daemon(root, host="host-b", workers=["cpu"], **settings).start()
    watcher = StatusWatcher(root)
    watcher.start()
    try:
        a_urls = urls(a)
        ids = {name: submit(a_urls[name]) for name, (submit, _, _) in SEEDS.items()}
        a.kill()  # mid-flight: accepted, queued or running on A
        a.start()
        a_urls, b_urls = urls(a), urls(b)
        deadline = time.monotonic() + 240
        pending = dict(ids)
        while pending and time.monotonic() < deadline:
            for name, job in list(pending.items()):
                ended, completed = SEEDS[name][1](a_urls[name], job)
                if ended:
                    assert completed, f"{name} job {job} did not complete"
                    del pending[name]
            time.sleep(0.5)
        assert not pending, f"not ended in time: {pending}"

        for name, job in ids.items():
            _, status, download = SEEDS[name]
            assert status(b_urls[name], job) == (True, True), name  # B answers about A's job
            from_a, from_b = download(a_urls[name], job), download(b_urls[name], job)
            assert from_a.status_code == 200 and from_b.status_code == 200, (name, from_a.text[:200], from_b.text[:200])
            assert from_a.content == from_b.content, name
            assert "video" in ffprobe_streams(from_a.content, tmp_path), name
            # An ordinary vidspool job: in the native API with its label, completed once.
            native = requests.get(f"{b.api}/api/v1/jobs/{job}", timeout=10).json()
            assert native["state"] == "completed" and native["labels"]["compat"] == name
            videos = [f for f in native["result"]["files"] if f["name"] == "video.mp4"]
            assert len(videos) == 1 and videos[0]["sha256"]
            listed = requests.get(f"{a.api}/api/v1/jobs", params={"label": f"compat={name}"}, timeout=10).json()["jobs"]
            assert job in [j["id"] for j in listed]
        assert_exactly_once(root, ids.values(), [a, b], watcher=watcher)  # each completed exactly once
    finally:
        watcher.stop_flag.set()
        for d in (a, b):
            d.stop()


def test_a_personality_off_loopback_needs_tokens_or_an_explicit_yes(tmp_path):
    env = base_env(VIDSPOOL_SPOOL__ROOT=str(tmp_path / "spool"), VIDSPOOL_COMPAT__STORY__LISTEN="0.0.0.0:5999")
    run = subprocess.run([sys.executable, "-m", "daemon", "run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "compat.story.listen 0.0.0.0:5999 is not loopback" in run.stderr and "require_tokens" in run.stderr
    env["VIDSPOOL_COMPAT__WAN__LISTEN"] = "127.0.0.1:8080"  # the native API's port
    env["VIDSPOOL_COMPAT__STORY__LISTEN"] = "127.0.0.1:0"
    run = subprocess.run([sys.executable, "-m", "daemon", "run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "compat.wan.listen 127.0.0.1:8080 is already in use" in run.stderr


def test_require_tokens_guards_a_seed_without_auth_in_its_document(tmp_path):
    d = Daemon(tmp_path / "spool", VIDSPOOL_API__TOKENS=json.dumps(["s3cret-token-0123456789"]),
               VIDSPOOL_COMPAT__STORY__LISTEN="127.0.0.1:0", VIDSPOOL_COMPAT__STORY__REQUIRE_TOKENS="true").start()
    try:
        base = d.heartbeat["compat_urls"]["story"]
        refused = requests.post(f"{base}/api/v1/generate", json={"text": "Hi."}, timeout=10)
        assert refused.status_code == 401 and refused.json() == {"error": refused.json()["error"]}
        assert "Bearer" in refused.json()["error"] and refused.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = requests.get(f"{base}/api/v1/jobs", headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 401
        ok = requests.post(f"{base}/api/v1/generate", json={"text": "Hi."},
                           headers={"Authorization": "Bearer s3cret-token-0123456789"}, timeout=10)
        assert ok.status_code == 202 and ok.json()["status"] == "queued"
    finally:
        d.stop()


def test_fit_moves_values_to_the_nearest_the_model_and_the_kind_take(tiny_models):
    from types import SimpleNamespace

    from daemon.http.compat.front import Personality, Submission
    from daemon.config import load_settings
    from pipeline.kinds import load_kinds

    settings = load_settings(None, models={"w": {"path": str(tiny_models / "wan-t2v")}},
                             kinds={"text-to-video": {"model": "w"}})
    front = Personality(SimpleNamespace(settings=settings, kinds=load_kinds()), settings.compat.wan)
    job = Submission("text-to-video", {"prompt": "x", "num_frames": 64, "width": 500, "height": 4095})
    front.fit(job)
    assert (job.params["num_frames"], job.params["width"], job.params["height"]) == (65, 496, 4096)
    assert job.adjusted == ["width 500→496 (wan2.1 takes multiples of 16)", "height 4095→4096 (wan2.1 takes multiples of 16)",
                            "num_frames 64→65 (wan2.1 takes 4k+1 frames (e.g. 17, 33, 81))"]
    top = Submission("text-to-video", {"prompt": "x", "num_frames": 2000})
    front.fit(top)  # 2001 is nearer, but over the kind's own limit of 2000
    assert top.params["num_frames"] == 1997
    valid = Submission("text-to-video", {"prompt": "x", "num_frames": 33, "width": 64, "height": 48})
    front.fit(valid)
    assert valid.adjusted == [] and valid.params["num_frames"] == 33
