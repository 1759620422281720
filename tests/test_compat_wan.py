"""The Wan2.1 Video Server personality (seed 004) through real daemons.

The document's curl examples run by the shell as written (only the base URL, the file paths
and the example job id changed), on a real drawn JPEG and a real ffmpeg clip, each polled to
completion through `GET /api/v1/job/:id` and downloaded from `/outputs/<filename>`, the MP4s
checked with ffprobe (4k+1 frames, 24 fps). Then the adjustments in the job status, the
models, the download example (refused offline; online against a Hugging Face hub on loopback,
tests/hubserver.py), every documented error, and traversal attempts on /outputs/.

The models are scripts/tiny_models.py's random-weight Wan2.1 folders. Two daemons:
- `wan`: the personality's preset (without a `kind`: it serves all three) makes 32x32
  videos in 2 steps (the examples' 64 frames stay 64→65); video-to-video keeps the clip's
  own size, which neither the preset nor `[kinds.video-to-video] defaults` stretch. The document's own defaults (512x512, 65 frames, 50 steps) take about 4 min
  per video on this 2-core CPU even on the tiny model (measured: 56 s at 2 steps, 244 s at
  50; the VAE decoding 65 frames of 512x512 is most of it), so they are checked on
- `bare`: no preset, `max_concurrent = 2`, text-to-video served by a Wan pipeline that runs
  out of memory in its second step: a prompt-only request's job carries the documented
  defaults (and fails with the document's "Error: Out of memory" shape), the third
  unfinished request is answered 429 (also after a restart), the kinds without a model
  answer 503, and /health 503 while no worker lives. It is online, to the loopback hub only.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image, ImageDraw

from tests.hubserver import HubServer
from tests.support import REPO, Daemon, drop_folder, wait_all_final, wait_for

TINY_DIR = REPO / ".cache" / "tiny-models"
SEED_BASE = "http://localhost:8080"
EXAMPLE_ID = "job_1234567890_abcdef123456"
JOB_ID = re.compile(r"^job_\d{10}_[0-9a-f]{12}$")
# The document's curl examples, as written.
CURL_T2V = """curl -X POST http://localhost:8080/api/v1/generate/text-to-video \\
  -H "Content-Type: application/json" \\
  -d '{
    "prompt": "A beautiful sunset over the ocean",
    "num_frames": 64,
    "fps": 24,
    "guidance_scale": 7.5
  }'"""
CURL_I2V = """curl -X POST http://localhost:8080/api/v1/generate/image-to-video \\
  -F "image=@/path/to/image.jpg" \\
  -F "prompt=A dog running in a park" \\
  -F "num_frames=64" \\
  -F "fps=24\""""
CURL_V2V = """curl -X POST http://localhost:8080/api/v1/generate/video-to-video \\
  -F "video=@/path/to/video.mp4" \\
  -F "prompt=Transform into anime style" \\
  -F "strength=0.8\""""
CURL_JOB = "curl http://localhost:8080/api/v1/job/job_1234567890_abcdef123456"
CURL_MODELS = "curl http://localhost:8080/api/v1/models"
CURL_DOWNLOAD = """curl -X POST http://localhost:8080/api/v1/models/download \\
  -H "Content-Type: application/json" \\
  -d '{"model_id": "Lightricks/LTX-Video"}'"""
INVALID = "Invalid request: "
TOO_MANY = {"error": "Too many concurrent requests. Please try again later."}
HUB_REPO = "vidspool-test/tiny-wan"


# -- helpers ---------------------------------------------------------------------------------
def curl(line: str, base: str, cwd: Path, **replace: str) -> str:
    line = line.replace(SEED_BASE, base)
    for old, new in replace.items():
        line = line.replace(old, new)
    run = subprocess.run(line, shell=True, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


def ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=codec_name,width,height,r_frame_rate,nb_read_frames", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    s = json.loads(out.stdout)["streams"][0]
    return {"codec": s["codec_name"], "size": (s["width"], s["height"]), "fps": s["r_frame_rate"],
            "frames": int(s["nb_read_frames"])}


def poll(base: str, job_id: str, cwd: Path, timeout: float = 180) -> list[dict]:
    """GET /api/v1/job/:id with the document's curl line until completed or failed."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(json.loads(curl(CURL_JOB, base, cwd, **{EXAMPLE_ID: job_id})))
        if seen[-1]["status"] in ("completed", "failed"):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"{job_id} not done: {seen[-1]}")


def fetch_output(base: str, status: dict, cwd: Path) -> Path:
    """The completed job's output_path (./outputs/<filename>) from the static file server."""
    assert status["output_path"].startswith("./outputs/"), status
    filename = status["output_path"][len("./outputs/"):]
    target = cwd / filename
    code = curl(f"curl -sS -o {target} -w '%{{http_code}}' {base}/outputs/{filename}", base, cwd)
    assert code == "200", code
    return target


def post(base: str, path: str, **kw) -> tuple[int, dict]:
    r = requests.post(base + path, timeout=30, **kw)
    return r.status_code, r.json()


def error_of(r) -> str:
    body = r.json() if hasattr(r, "json") else r
    assert isinstance(body, dict) and set(body) <= {"error", "reason"} and isinstance(body["error"], str), body
    return body["error"]


def drawn_jpeg(path: Path) -> Path:
    """A small drawn picture (sky, sun, ground) as a real JPEG."""
    image = Image.new("RGB", (96, 64), (60, 140, 60))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 96, 32), fill=(110, 160, 230))
    draw.ellipse((60, 6, 78, 24), fill=(255, 210, 40))
    image.save(path, format="JPEG", quality=90)
    return path


def ffmpeg_clip(path: Path, frames: int = 12, size: str = "64x48") -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size={size}:rate=12",
                    "-frames:v", str(frames), "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


# -- daemons ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wan(tiny_models, tmp_path_factory):
    base = tmp_path_factory.mktemp("wan")
    models = {"tiny-wan-t2v": {"path": str(tiny_models / "wan-t2v")}, "tiny-wan-i2v": {"path": str(tiny_models / "wan-i2v")}}
    kinds = {"text-to-video": {"model": "tiny-wan-t2v"}, "image-to-video": {"model": "tiny-wan-i2v"},
             "video-to-video": {"model": "tiny-wan-t2v", "defaults": {"width": 32, "height": 32}}}
    presets = {"wan-tiny": {"params": {"width": 32, "height": 32, "num_inference_steps": 2}}}  # no kind: Wan's three
    d = Daemon(base / "spool", VIDSPOOL_MODELS=json.dumps(models), VIDSPOOL_KINDS=json.dumps(kinds),
               VIDSPOOL_PRESETS=json.dumps(presets), VIDSPOOL_COMPAT__WAN__LISTEN="127.0.0.1:0",
               VIDSPOOL_COMPAT__WAN__PRESET="wan-tiny").start()
    yield d, d.heartbeat["compat_urls"]["wan"]
    d.stop()


@pytest.fixture(scope="module")
def hub(tiny_models):
    """A Hugging Face hub on loopback (tests/hubserver.py) with the tiny Wan model."""
    server = HubServer({HUB_REPO: tiny_models / "wan-t2v"}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bare(tiny_models, hub, tmp_path_factory):
    """Online against the loopback hub only, its hub cache and registry in a temp folder."""
    base = tmp_path_factory.mktemp("wan-bare")
    models = {"oom": {"path": str(tiny_models / "wan-t2v"), "kinds": ["text-to-video"],
                      "pipeline": "vidspool_testkinds.oom:OutOfMemoryWanPipeline"}}
    d = Daemon(base / "spool", VIDSPOOL_MODELS=json.dumps(models),
               VIDSPOOL_KINDS=json.dumps({"text-to-video": {"model": "oom"}}),
               VIDSPOOL_WORKERS__RESTART_BACKOFF_SECONDS="4", VIDSPOOL_REGISTRY__DIR=str(base / "models"),
               VIDSPOOL_COMPAT__WAN__LISTEN="127.0.0.1:0", VIDSPOOL_COMPAT__WAN__MAX_CONCURRENT="2",
               VIDSPOOL_REGISTRY__DOWNLOAD_ALLOW='["vidspool-test/*"]', HF_HOME=str(base / "hf"), HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_TELEMETRY="1")
    d.start()
    yield d, d.heartbeat["compat_urls"]["wan"]
    d.stop()


@pytest.fixture(scope="module")
def curled(wan, tmp_path_factory):
    """The three generation examples as written, each polled and downloaded."""
    d, base = wan
    cwd = tmp_path_factory.mktemp("wan-curl")
    image, video = drawn_jpeg(cwd / "image.jpg"), ffmpeg_clip(cwd / "video.mp4")
    paths = {"/path/to/image.jpg": str(image), "/path/to/video.mp4": str(video)}
    runs = {}
    for name, line in (("t2v", CURL_T2V), ("i2v", CURL_I2V), ("v2v", CURL_V2V)):
        answer = json.loads(curl(line, base, cwd, **paths))
        seen = poll(base, answer["job_id"], cwd)
        runs[name] = {"answer": answer, "seen": seen, "status": seen[-1],
                      "video": fetch_output(base, seen[-1], cwd) if seen[-1]["status"] == "completed" else None}
    runs["daemon"] = d
    return runs


# -- the documented examples ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["t2v", "i2v", "v2v"])
def test_the_generation_examples_as_written(curled, name):
    run = curled[name]
    assert run["answer"] == {"job_id": run["answer"]["job_id"], "status": "processing",
                             "message": "Video generation started"}
    assert JOB_ID.match(run["answer"]["job_id"]), run["answer"]
    status = run["status"]
    assert status["status"] == "completed", (status, curled["daemon"].log())
    assert status["message"].startswith("Generation complete"), status
    prefix = {"t2v": "text2video", "i2v": "image2video", "v2v": "video2video"}[name]
    assert status["output_path"] == f"./outputs/{prefix}_{status['job_id']}.mp4"
    for key in ("created_at", "updated_at"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", status[key]), status
    assert status["created_at"] <= status["updated_at"]
    assert {s["status"] for s in run["seen"]} <= {"pending", "processing", "completed"}
    probed = ffprobe(run["video"])
    # t2v and i2v: the examples' 64 frames fitted to Wan2.1's 65 at the preset's size; v2v:
    # the 12-frame clip's 9 at its own 64x48 (the preset's size never stretches it).
    size, frames = ((64, 48), 9) if name == "v2v" else ((32, 32), 65)
    assert probed == {"codec": "h264", "size": size, "fps": "24/1", "frames": frames}, probed


def test_the_fitted_values_are_in_the_job_status(curled):
    for name, family in (("t2v", "wan2.1"), ("i2v", "wan2.1-i2v")):
        status = curled[name]["status"]
        assert status["adjustments"] == [f"num_frames 64→65 ({family} takes 4k+1 frames (e.g. 17, 33, 81))"], status
        assert "adjusted: num_frames 64→65" in status["message"]
    v2v = curled["v2v"]["status"]
    assert v2v["adjustments"] == ["video frames 12→9 (wan2.1 takes 4k+1 frames (e.g. 17, 33, 81), "
                                  "the last ones are left out)"], v2v
    assert "ignored" not in v2v


def test_the_job_and_output_are_served_from_the_status(curled, wan, tmp_path):
    d, base = wan
    status = curled["t2v"]["status"]
    native = requests.get(f"{d.api}/api/v1/jobs/{status['job_id']}", timeout=10).json()
    assert native["labels"]["compat"] == "wan" and native["kind"] == "text-to-video"
    params = native["job"]["params"]
    assert (params["prompt"], params["num_frames"], params["fps"], params["guidance_scale"]) == (
        "A beautiful sunset over the ocean", 65, 24, 7.5)
    assert (params["width"], params["height"], params["num_inference_steps"]) == (32, 32, 2)  # the preset's
    r = requests.get(f"{base}/outputs/text2video_{status['job_id']}.mp4", headers={"Range": "bytes=0-99"}, timeout=10)
    assert r.status_code == 206 and r.headers["Content-Type"] == "video/mp4" and len(r.content) == 100
    assert r.content == curled["t2v"]["video"].read_bytes()[:100]


def test_only_the_prompt(wan, tmp_path):
    """A client sending only the required field gets the documented 64→65 frames at 24 fps
    (size and steps: the preset's, see the module docstring; the document's own are checked
    on the bare daemon)."""
    d, base = wan
    code, answer = post(base, "/api/v1/generate/text-to-video", json={"prompt": "a red fox in snow"})
    assert code == 200, answer
    status = poll(base, answer["job_id"], tmp_path)[-1]
    assert status["status"] == "completed", status
    assert ffprobe(fetch_output(base, status, tmp_path)) == {"codec": "h264", "size": (32, 32), "fps": "24/1", "frames": 65}


def test_only_the_required_files(wan, tmp_path):
    """image-to-video and video-to-video with nothing but their file: the documented
    defaults; video-to-video's blank prompt is said to be one."""
    d, base = wan
    image, clip = drawn_jpeg(tmp_path / "photo.jpg"), ffmpeg_clip(tmp_path / "clip.mp4", frames=9)
    for path, files, size, frames in (("image-to-video", {"image": ("photo.jpg", image.read_bytes())}, (32, 32), 65),
                                      ("video-to-video", {"video": ("clip.mp4", clip.read_bytes())}, (64, 48), 9)):
        code, answer = post(base, f"/api/v1/generate/{path}", files=files)
        assert code == 200, answer
        status = poll(base, answer["job_id"], tmp_path)[-1]
        assert status["status"] == "completed", status
        probed = ffprobe(fetch_output(base, status, tmp_path))
        assert probed == {"codec": "h264", "size": size, "fps": "24/1", "frames": frames}, probed
        params = requests.get(f"{d.api}/api/v1/jobs/{answer['job_id']}", timeout=10).json()["job"]["params"]
        assert params["guidance_scale"] == 7.5 and params["fps"] == 24 and params["seed"] is None, params
        if path == "video-to-video":
            assert params["strength"] == 0.8 and params["prompt"] == " "
            assert status["adjustments"] == ['prompt ""→" " (video-to-video here takes a non-empty prompt, '
                                             'and Wan2.1 reads a blank one as "")'], status
        else:
            assert params["prompt"] is None and params["num_frames"] == 65


def test_a_video_keeps_its_size_unless_the_job_asks_for_another(wan, tmp_path):
    """A 128x96 upload stays 128x96 (issue 26: a 128x128 preset stretched it), through Wan and
    through the native spool: a job in the kindless preset's inbox (with
    `[kinds.video-to-video] defaults` 32x32 too) keeps the input's size; a job that asks for
    32x32 itself gets it."""
    d, base = wan
    clip = ffmpeg_clip(tmp_path / "wide.mp4", frames=5, size="128x96")
    code, answer = post(base, "/api/v1/generate/video-to-video", files={"video": ("wide.mp4", clip.read_bytes())},
                        data={"prompt": "snow"})
    assert code == 200, answer
    status = poll(base, answer["job_id"], tmp_path)[-1]
    assert status["status"] == "completed", status
    assert ffprobe(fetch_output(base, status, tmp_path))["size"] == (128, 96)
    inbox = d.root / "inbox" / "wan-tiny"
    for name, own in (("v2v-own-size", {}), ("v2v-asked-size", {"width": 32, "height": 32})):
        drop_folder(inbox, name, {"kind": "video-to-video", "inputs": {"video": "wide.mp4"},
                                  "params": {"prompt": "snow", "num_frames": 5, **own}}, {"wide.mp4": clip.read_bytes()})
    done = wait_all_final(d.root, ["v2v-own-size", "v2v-asked-size"], timeout=180, daemon=d)
    sizes = {n: (doc["result"]["video"]["width"], doc["result"]["video"]["height"]) for n, doc in done.items()}
    assert sizes == {"v2v-own-size": (128, 96), "v2v-asked-size": (32, 32)}, done
    assert done["v2v-own-size"]["job"]["params"]["num_inference_steps"] == 2  # the preset's other params apply


def test_sizes_and_frames_are_fitted_and_unknown_fields_listed(wan, tmp_path):
    d, base = wan
    code, answer = post(base, "/api/v1/generate/text-to-video", json={
        "prompt": "a lighthouse", "width": 40, "height": 24, "num_frames": 10, "num_inference_steps": 25,
        "seed": 7, "negative_prompt": "blurry", "style": "anime"})
    assert code == 200, answer
    status = poll(base, answer["job_id"], tmp_path)[-1]
    assert status["status"] == "completed", status
    assert status["adjustments"] == ["width 40→48 (wan2.1 takes multiples of 16)",
                                     "height 24→32 (wan2.1 takes multiples of 16)",
                                     "num_frames 10→9 (wan2.1 takes 4k+1 frames (e.g. 17, 33, 81))"], status
    assert status["ignored"] == ["style (not a field of text-to-video in the document)"]
    assert ffprobe(fetch_output(base, status, tmp_path)) == {"codec": "h264", "size": (48, 32), "fps": "24/1", "frames": 9}
    params = requests.get(f"{d.api}/api/v1/jobs/{answer['job_id']}", timeout=10).json()["job"]["params"]
    assert (params["seed"], params["negative_prompt"], params["num_inference_steps"]) == (7, "blurry", 25)


def test_health_and_model_info(wan):
    d, base = wan
    r = requests.get(f"{base}/health", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "healthy" and r.json()["service"] == "wan2-video-server"
    assert set(r.json()) == {"status", "service", "version"}
    info = requests.get(f"{base}/api/v1/model/info", timeout=10).json()
    assert {"name", "version", "provider", "gpu_enabled", "gpu_device_id", "cache_dir"} <= set(info)
    assert info["name"] == "Wan2.1" and info["model"] == "tiny-wan-t2v" and info["provider"] == "local"
    assert info["gpu_enabled"] is False and info["gpu_device_id"] is None  # CPU workers only
    assert info["cache_dir"] == "hub" and info["available"] is True  # the hub cache, not its host path


def test_models_and_the_download_example(wan, tmp_path):
    d, base = wan
    models = json.loads(curl(CURL_MODELS, base, tmp_path))["models"]
    by_id = {m["id"]: m for m in models}
    assert set(by_id) == {"tiny-wan-t2v", "tiny-wan-i2v"}, models
    for m in models:
        assert {"id", "name", "provider", "cache_dir", "downloaded"} <= set(m)
        assert m["downloaded"] is True and m["provider"] == "local" and m["cache_dir"] == "vidspool/.cache/tiny-models"
    # No token, and no [registry] download_allow: the document's example is refused, saying why.
    out = curl(CURL_DOWNLOAD.replace("curl ", "curl -s -w '\\n%{http_code}' ", 1), base, tmp_path)
    body, code = out.rsplit("\n", 1)
    assert code == "403" and "download_allow" in error_of(json.loads(body)), out
    for bad, status in (({"model_id": "not a repo"}, 400), ({}, 400), ({"model_id": 5}, 400)):
        r = requests.post(f"{base}/api/v1/models/download", json=bad, timeout=10)
        assert r.status_code == status and error_of(r), (bad, r.text)
    assert error_of(requests.post(f"{base}/api/v1/models/download", json={}, timeout=10)) == f"{INVALID}model_id is required"


# -- errors ----------------------------------------------------------------------------------------
def test_missing_prompt_and_files(wan, tmp_path):
    d, base = wan
    required = {"error": f"{INVALID}prompt is required"}
    for body in ({}, {"prompt": ""}, {"prompt": "   "}, {"num_frames": 17}, {"prompt": None}):
        assert post(base, "/api/v1/generate/text-to-video", json=body) == (400, required), body
    r = requests.post(f"{base}/api/v1/generate/text-to-video", data=b"", headers={"Content-Type": "application/json"}, timeout=10)
    assert (r.status_code, r.json()) == (400, required)
    assert post(base, "/api/v1/generate/text-to-video", json={"prompt": 5})[1] == {"error": f"{INVALID}prompt must be a string"}
    r = requests.post(f"{base}/api/v1/generate/text-to-video", data=b"{not json", headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and error_of(r).startswith("body is not valid JSON")
    assert post(base, "/api/v1/generate/image-to-video", files={"prompt": (None, "a dog")}) == (
        400, {"error": f"{INVALID}image file is required"})
    assert post(base, "/api/v1/generate/video-to-video", files={"prompt": (None, "anime")}) == (
        400, {"error": f"{INVALID}video file is required"})
    # A file that is not a video, and a file field the endpoint does not take.
    code, body = post(base, "/api/v1/generate/video-to-video", files={"video": ("clip.mp4", b"not a video at all")})
    assert code == 400 and body["error"].startswith(INVALID) and "not a readable video" in body["error"], body
    code, body = post(base, "/api/v1/generate/image-to-video", files={"video": ("clip.mp4", b"x"), "image": ("a.jpg", b"y")})
    assert code == 400 and error_of(body), body
    # Nothing of these reached the spool as a job.
    assert not [j for j in requests.get(f"{d.api}/api/v1/jobs?state=failed", timeout=10).json()["jobs"]
                if j["labels"].get("compat") == "wan"]


@pytest.mark.parametrize("field,value,why", [
    ("num_frames", 129, "between 1 and 128"), ("num_frames", 0, "between 1 and 128"),
    ("num_frames", "lots", "must be an integer"), ("num_frames", 64.5, "must be an integer"),
    ("guidance_scale", 0.5, "between 1 and 20"), ("guidance_scale", 20.5, "between 1 and 20"),
    ("num_inference_steps", 24, "between 25 and 100"), ("num_inference_steps", 101, "between 25 and 100"),
    ("seed", -2, "between -1 and"), ("width", 0, "between 1 and 4096"), ("height", 5000, "between 1 and 4096"),
    ("fps", 0, "between 1 and 120"), ("guidance_scale", True, "must be a number"),
])
def test_out_of_range_values(wan, field, value, why):
    d, base = wan
    code, body = post(base, "/api/v1/generate/text-to-video", json={"prompt": "a cat", field: value})
    assert code == 400 and body["error"].startswith(f"{INVALID}{field} must") and why in body["error"], body
    code, body = post(base, "/api/v1/generate/image-to-video", files={
        "image": ("a.jpg", b"unused"), "prompt": (None, "a dog"), field: (None, json.dumps(value))})
    assert code == 400 and body["error"].startswith(f"{INVALID}{field} must") and why in body["error"], body


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1", "nan"])
def test_strength_range(wan, tmp_path, value):
    d, base = wan
    clip = ffmpeg_clip(tmp_path / "v.mp4", frames=5)
    code, body = post(base, "/api/v1/generate/video-to-video", files={
        "video": ("v.mp4", clip.read_bytes()), "prompt": (None, "anime"), "strength": (None, value)})
    assert code == 400 and body["error"].startswith(f"{INVALID}strength must"), body


def test_unknown_jobs_and_outputs_are_404(curled, wan):
    d, base = wan
    for job_id in (EXAMPLE_ID, "job_0_000000000000", "nope%2F..%2Fx", ".hidden", "a" * 65):
        r = requests.get(f"{base}/api/v1/job/{job_id}", timeout=10)
        assert (r.status_code, r.json()) == (404, {"error": "Job not found"}), job_id
    r = requests.get(f"{base}/api/v1/job/", timeout=10)  # no id: no such route
    assert r.status_code == 404 and error_of(r)
    done = curled["t2v"]["status"]["job_id"]
    host, port = urlsplit(base).hostname, urlsplit(base).port
    attempts = [
        f"/outputs/image2video_{done}.mp4",  # the job exists, under another kind's name
        f"/outputs/text2video_{done}.json", f"/outputs/{done}.mp4", "/outputs/video.mp4", "/outputs/status.json",
        f"/outputs/text2video_{done}.mp4/../status.json", f"/outputs/text2video_{done}%2Fstatus.json",
        f"/outputs/text2video_{done}%2F..%2F..%2Fhosts%2Ftest-host.json", "/outputs/../outbox",
        "/outputs/%2e%2e/%2e%2e/etc/passwd", "/outputs/..%2F..%2Fetc%2Fpasswd", "/outputs/text2video_..mp4",
        "/outputs/text2video_.mp4", "/outputs/", f"/outputs/text2video_{EXAMPLE_ID}.mp4",
    ]
    for path in attempts:
        conn = http.client.HTTPConnection(host, port, timeout=10)  # sends the path as it is
        conn.request("GET", path)
        r = conn.getresponse()
        body = json.loads(r.read())
        conn.close()
        assert r.status == 404 and set(body) == {"error"}, (path, r.status, body)


# -- the bare daemon: documented defaults, max_concurrent, model errors ---------------------------
@pytest.fixture(scope="module")
def busy(bare, tmp_path_factory):
    """Two prompt-only requests (the second waits for the only worker), a third refused,
    the first failing out of memory, the second canceled, then a fourth accepted."""
    d, base = bare
    runs: dict = {}
    code, first = post(base, "/api/v1/generate/text-to-video", json={"prompt": "a storm at sea"})
    assert code == 200, first
    runs["first"] = first["job_id"]
    runs["first_job"] = requests.get(f"{d.api}/api/v1/jobs/{first['job_id']}", timeout=10).json()
    code, second = post(base, "/api/v1/generate/text-to-video", json={"prompt": "a calm lake"})
    assert code == 200, second
    runs["second"] = requests.get(f"{base}/api/v1/job/{second['job_id']}", timeout=10).json()
    runs["third"] = post(base, "/api/v1/generate/text-to-video", json={"prompt": "one too many"})
    cwd = tmp_path_factory.mktemp("wan-bare")
    runs["first_seen"] = poll(base, first["job_id"], cwd, timeout=240)
    requests.delete(f"{d.api}/api/v1/jobs/{second['job_id']}", timeout=10)
    runs["second_end"] = poll(base, second["job_id"], cwd, timeout=60)[-1]
    runs["fourth"] = post(base, "/api/v1/generate/text-to-video", json={"prompt": "room again"})
    if runs["fourth"][0] == 200:
        requests.delete(f"{d.api}/api/v1/jobs/{runs['fourth'][1]['job_id']}", timeout=10)
        poll(base, runs["fourth"][1]["job_id"], cwd, timeout=60)
    return runs


def test_a_prompt_only_job_has_the_documented_defaults(busy):
    job = busy["first_job"]
    params = {k: v for k, v in job["job"]["params"].items() if v is not None}
    assert params == {"prompt": "a storm at sea", "num_frames": 65, "fps": 24, "width": 512, "height": 512,
                      "guidance_scale": 7.5, "num_inference_steps": 50}, params  # no seed: random
    assert job["labels"]["compat_adjusted"] == "num_frames 64→65 (wan2.1 takes 4k+1 frames (e.g. 17, 33, 81))"


def test_pending_while_queued_and_429_beyond_max_concurrent(busy):
    second = busy["second"]
    assert second["status"] == "pending" and second["message"].startswith("Job queued (position 1)"), second
    assert "output_path" not in second
    assert busy["third"] == (429, TOO_MANY)
    assert busy["second_end"]["status"] == "failed" and busy["second_end"]["message"].startswith("Error: "), busy["second_end"]
    assert busy["fourth"][0] == 200, busy["fourth"]  # the ended jobs no longer count


def test_a_model_error_is_a_failed_job(busy):
    seen = busy["first_seen"]
    end = seen[-1]
    assert end["status"] == "failed" and end["message"].startswith("Error: ") and "out of memory" in end["message"].lower(), end
    assert "output_path" not in end
    assert {s["status"] for s in seen} <= {"pending", "processing", "failed"}
    assert any(s["status"] == "processing" and s["message"].startswith("Generating video...") for s in seen), seen


def test_kinds_without_a_model_answer_503(bare, tmp_path):
    d, base = bare
    image, clip = drawn_jpeg(tmp_path / "i.jpg"), ffmpeg_clip(tmp_path / "v.mp4", frames=5)
    for path, files in (("image-to-video", {"image": ("i.jpg", image.read_bytes())}),
                        ("video-to-video", {"video": ("v.mp4", clip.read_bytes())})):
        r = requests.post(f"{base}/api/v1/generate/{path}", files={**files, "prompt": (None, "x")}, timeout=10)
        assert r.status_code == 503 and error_of(r) == "Model not loaded", r.text
        reason = r.json()["reason"]
        assert reason.startswith(f"no registry model does {path}") and reason.endswith(f"[kinds.{path}] model"), reason


def test_the_download_example_online(bare, tmp_path):
    """The document's download example (the model id: one the loopback hub serves, allowed by
    [registry] download_allow) starts a download into the hub cache; /api/v1/models shows it
    registered under its repo id, the name a job gives. A repo the hub lacks is listed as a
    failed download."""
    d, base = bare
    answer = json.loads(curl(CURL_DOWNLOAD, base, tmp_path, **{"Lightricks/LTX-Video": HUB_REPO}))
    assert answer["message"] == "Model download started" and answer["model_id"] == HUB_REPO, answer
    cache = "hub"

    def listed(repo: str) -> dict:
        return {m["id"]: m for m in json.loads(curl(CURL_MODELS, base, tmp_path))["models"]}.get(repo) or {}

    wait_for(lambda: listed(HUB_REPO).get("downloaded") is True, timeout=60, what=f"{HUB_REPO} downloaded")
    entry = listed(HUB_REPO)
    assert (entry["name"], entry["provider"], entry["cache_dir"]) == (HUB_REPO, "huggingface", cache), entry
    assert (d.root.parent / "models" / "vidspool-test--tiny-wan" / "model_index.json").is_file()  # registered
    missing = "vidspool-test/not-on-the-hub"
    assert post(base, "/api/v1/models/download", json={"model_id": missing})[0] == 200
    wait_for(lambda: (listed(missing).get("download") or {}).get("state") == "failed", timeout=60, what="failed")
    entry = listed(missing)
    assert entry["downloaded"] is False and "no such model repository" in entry["download"]["error"], entry


def test_health_is_503_while_no_worker_lives(bare, busy):
    d, base = bare
    assert requests.get(f"{base}/health", timeout=10).status_code == 200
    pid = requests.get(f"{d.api}/api/v1/queue", timeout=10).json()["devices"][0]["pid"]
    os.kill(pid, signal.SIGKILL)
    seen = []

    def unhealthy():
        r = requests.get(f"{base}/health", timeout=10)
        seen.append((r.status_code, r.json()))
        return r.status_code == 503

    wait_for(unhealthy, timeout=10, what="503 from /health")
    code, body = seen[-1]
    assert body["status"] == "unhealthy" and body["service"] == "wan2-video-server" and "no live worker" in body["problems"]
    wait_for(lambda: requests.get(f"{base}/health", timeout=10).status_code == 200, timeout=30, what="healthy again")


def test_unfinished_jobs_still_count_after_a_restart(bare, busy, tmp_path):
    """max_concurrent counts from the outbox at start-up: two jobs recovered after a kill
    still fill the two places (last: the daemon's URL changes)."""
    d, base = bare
    ids = [post(base, "/api/v1/generate/text-to-video", json={"prompt": f"job {i}"})[1]["job_id"] for i in range(2)]

    def accepted():  # in the outbox (a request still in the inbox counts once it is taken)
        return all(requests.get(f"{d.api}/api/v1/jobs/{i}", timeout=10).json()["kind"] for i in ids)

    wait_for(accepted, 20, "both accepted")
    d.kill()
    d.start()
    base = d.heartbeat["compat_urls"]["wan"]
    try:
        wait_for(accepted, 20, "both accepted")
        assert post(base, "/api/v1/generate/text-to-video", json={"prompt": "a third"}) == (429, TOO_MANY)
        assert {requests.get(f"{base}/api/v1/job/{i}", timeout=10).json()["status"] for i in ids} <= {"pending", "processing"}
    finally:
        for job_id in ids:
            requests.delete(f"{d.api}/api/v1/jobs/{job_id}", timeout=10)
