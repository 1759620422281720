"""Each seed's documented examples against a daemon configured with nothing but
`[compat.NAME] listen` (issue 26 items 2 and 6; besides the test harness's spool, worker and
port settings): no `[kinds.*]`, no `default_face`, no `[characters.*]`, no preset, no tokens;
a registry folder holding the tiny Wan2.1 text- and image-to-video models
(scripts/tiny_models.py), so each video kind has exactly one model.
The curl lines and snippets run as printed, only the base URL, the example ids and the file
paths changed; a request whose documented sizes take minutes on this CPU (Visualizr's
1024×1024, Wan's 512×512×65 at 50 steps) is checked queued with the model and params it
will run, on a paused host, then cancelled, and a small request of the same endpoint runs to
completion.

A second daemon's registry holds Stable Video Diffusion and Wan2.1 image-to-video (so
text-to-video has no model and image-to-video two): start-up, `vidspool doctor` and the
requests say which key to set, and a documented model name maps to that family's model.
Every request answered 4xx leaves nothing: no inbox staging, no outbox folder, no job.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image, ImageDraw

from tests import test_compat_heygem as heygem
from tests import test_compat_story as story
from tests import test_compat_wan as wan
from tests.support import REPO, Daemon, base_env, wait_for
from tests.test_compat_visualizr import VisualizrClient  # the document's SDK, as printed

NAMES = ("heygem", "story", "paksatalker", "visualizr", "wan")


def listen_alone(*names: str) -> dict[str, str]:
    return {f"VIDSPOOL_COMPAT__{n.upper()}__LISTEN": "127.0.0.1:0" for n in names}


def curl(line: str, seed_base: str, base: str, cwd: Path, **replace: str) -> str:
    """A documented curl line run by the shell, its base URL (and `replace`) substituted."""
    return wan.curl(line, base, cwd, **{seed_base: base}, **replace)


ffprobe = wan.ffprobe  # codec, size, fps, frames


def poll(url: str, done, timeout: float = 180) -> dict:
    """GET `url` until `done(body)`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = requests.get(url, timeout=10).json()
        if done(body):
            return body
        time.sleep(0.2)
    raise AssertionError(f"{url}: not done: {body}")


def native_job(d: Daemon, job_id: str) -> dict:
    r = requests.get(f"{d.api}/api/v1/jobs/{job_id}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def pause(d: Daemon) -> None:
    r = requests.post(f"{d.api}/api/v1/pause", json={"reason": "documented sizes: checked queued"}, timeout=10)
    assert r.status_code == 200, r.text


def resume(d: Daemon) -> None:
    assert requests.post(f"{d.api}/api/v1/resume", json={}, timeout=10).status_code == 200


def cancel(d: Daemon, job_id: str) -> None:
    assert requests.delete(f"{d.api}/api/v1/jobs/{job_id}", timeout=10).status_code in (200, 202)
    wait_for(lambda: native_job(d, job_id)["state"] == "canceled", what=f"{job_id} canceled")


def registry_of(tiny_models: Path, folder: Path, *families: str) -> Path:
    folder.mkdir()
    for family in families:
        shutil.copytree(tiny_models / family, folder / family)
    return folder


# -- inputs ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """my_video.mp4 (a face with a tone, as HeyGem's example uploads), image.jpg, video.mp4."""
    from skimage import data

    folder = tmp_path_factory.mktemp("listen-alone-files")
    Image.fromarray(np.ascontiguousarray(data.astronaut()[20:340, 100:420])).resize((128, 128)).save(folder / "face.png")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-loop", "1", "-framerate", "10", "-i", str(folder / "face.png"),
                    "-f", "lavfi", "-i", "sine=frequency=220:duration=1.2", "-t", "1.2", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(folder / "my_video.mp4")], check=True)
    image = Image.new("RGB", (96, 64), (60, 140, 60))
    ImageDraw.Draw(image).ellipse((60, 6, 78, 24), fill=(255, 210, 40))
    image.save(folder / "image.jpg", format="JPEG")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=12", "-frames:v", "12",
                    "-pix_fmt", "yuv420p", str(folder / "video.mp4")], check=True)
    return folder


@pytest.fixture(scope="module")
def alone(tiny_models, tmp_path_factory):
    """Every personality on, with `listen` alone; the registry: tiny Wan2.1 t2v and i2v."""
    base = tmp_path_factory.mktemp("listen-alone")
    registry = registry_of(tiny_models, base / "models", "wan-t2v", "wan-i2v")
    d = Daemon(base / "spool", VIDSPOOL_REGISTRY__DIR=str(registry), **listen_alone(*NAMES)).start()
    d.urls = d.heartbeat["compat_urls"]
    yield d
    d.stop()


@pytest.fixture(scope="module")
def mixed(tiny_models, tmp_path_factory):
    """Visualizr and Wan with `listen` alone on a registry of SVD and Wan2.1 i2v: no model
    for text- and video-to-video, two for image-to-video. Paused: nothing here runs."""
    base = tmp_path_factory.mktemp("listen-mixed")
    registry = registry_of(tiny_models, base / "models", "svd", "wan-i2v")
    d = Daemon(base / "spool", VIDSPOOL_REGISTRY__DIR=str(registry), **listen_alone("visualizr", "wan")).start()
    d.urls = d.heartbeat["compat_urls"]
    pause(d)
    yield d
    d.stop()


def host_lines(d: Daemon) -> dict[str, list[tuple[str, str]]]:
    """The start-up's compat.host events: personality → [(level, message)]."""
    out: dict[str, list] = {}
    for e in d.log_events():
        if e.get("event") == "compat.host":
            out.setdefault(e["personality"], []).append((e["level"], e["message"]))
    return out


# -- start-up ------------------------------------------------------------------------------------
def test_start_up_says_what_listen_alone_gives(alone):
    lines = host_lines(alone)
    assert sorted(lines) == ["heygem", "paksatalker", "visualizr", "wan"], lines  # story needs no model
    assert all(level == "info" for found in lines.values() for level, _ in found), lines
    messages = {name: " | ".join(m for _, m in found) for name, found in lines.items()}
    for kind, model in (("text-to-video", "wan-t2v"), ("image-to-video", "wan-i2v"), ("video-to-video", "wan-t2v")):
        assert f"{kind} runs {model}, the only registry model that does it (set [kinds.{kind}] model" in messages["wan"]
    assert "video-to-video" not in messages["visualizr"]
    for name in ("heygem", "paksatalker"):
        assert "scikit-image's astronaut portrait" in messages[name] and f"[compat.{name}] default_face" in messages[name]
        assert "until then lip sync is none" in messages[name]


# -- HeyGem (seed 000) -------------------------------------------------------------------------



def test_heygem_examples(alone, files, tmp_path):
    base = alone.urls["heygem"]
    shutil.copy(files / "my_video.mp4", tmp_path)
    answer = json.loads(curl(heygem.CURL_GENERATE, heygem.SEED_BASE, base, tmp_path))
    assert answer["success"] is True and answer["message"] == "Task submitted successfully", answer
    text_only = requests.post(f"{base}/api/generate", data={"text": "Hello, this is a test message"}, timeout=30)
    assert text_only.status_code == 200, text_only.text  # the face: the one the project ships
    for task_id, size in ((answer["task_id"], (128, 128)), (text_only.json()["task_id"], (512, 512))):
        replace = {"task_1234567890": task_id}
        poll(f"{base}/api/status/{task_id}", lambda b: b["status"] in ("completed", "failed"))
        status = json.loads(curl(heygem.CURL_STATUS, heygem.SEED_BASE, base, tmp_path, **replace))
        assert status["status"] == "completed" and status["lipsync"] == "none", status
        curl(heygem.CURL_DOWNLOAD, heygem.SEED_BASE, base, tmp_path, **replace)
        assert ffprobe(tmp_path / task_id)["size"] == size


# -- Story (seed 001) -------------------------------------------------------------------------



def test_story_examples(alone, tmp_path):
    base = alone.urls["story"] + "/api/v1"
    job_id = json.loads(curl(story.CURL_GENERATE, story.SEED_BASE, base, tmp_path))["job_id"]
    poll(f"{base}/status/{job_id}", lambda b: b["status"] in ("completed", "failed"))
    status = json.loads(curl(story.CURL_STATUS, story.SEED_BASE, base, tmp_path, **{story.EXAMPLE_ID: job_id}))
    assert status["status"] == "completed" and status["progress"] == 100, status
    curl(story.CURL_DOWNLOAD, story.SEED_BASE, base, tmp_path, **{story.EXAMPLE_ID: job_id})
    assert ffprobe(tmp_path / "video.mp4")["codec"] == "h264"
    assert job_id in json.loads(curl(story.CURL_JOBS, story.SEED_BASE, base, tmp_path))["jobs"]


# -- PaksaTalker (seed 002) ------------------------------------------------------------------------
def test_paksatalker_without_an_image(alone, tmp_path):
    """Its document: without `image` but with `text` "a default avatar is synthesized"; the
    prompt endpoint speaks with the documented default voice."""
    base = alone.urls["paksatalker"] + "/api/v1"
    fusion = requests.post(f"{base}/generate/fusion-video", data={"text": "Hello from the default face."}, timeout=30)
    prompt = requests.post(f"{base}/generate/video-from-prompt",
                           data={"prompt": "Hello from a prompt.", "voice": "en-US-JennyNeural"}, timeout=30)
    assert requests.get(f"{base}/capabilities", timeout=30).json()["data"]["vidspool"]["default_face"] is True
    for r in (fusion, prompt):
        assert r.status_code == 200 and r.json()["status"] == "processing", r.text
        task_id = r.json()["task_id"]
        body = poll(f"{base}/status/{task_id}", lambda b: b["data"]["status"] in ("completed", "failed"))["data"]
        assert body["status"] == "completed", body
        video = requests.get(alone.urls["paksatalker"] + body["video_url"], timeout=30)
        (tmp_path / f"{task_id}.mp4").write_bytes(video.content)
        assert ffprobe(tmp_path / f"{task_id}.mp4")["size"] == (720, 720)  # 720p of the square portrait
    assert prompt.json()["task_id"] and "voice en-US-JennyNeural→" in " ".join(body["adjusted"])


# -- Visualizr (seed 003) -----------------------------------------------------------------------
VISUALIZR_VIDEO = {  # the document's request body, as printed
    "prompt": "A serene mountain landscape at sunset with golden light",
    "negative_prompt": "blurry, low quality, distorted",
    "width": 1024,
    "height": 1024,
    "num_frames": 24,
    "fps": 8,
    "num_inference_steps": 25,
    "guidance_scale": 7.5,
    "seed": 42,
    "model": "stable-video-diffusion",
    "style": "cinematic",
}
VISUALIZR_FROM_IMAGE = {"motion_prompt": "gentle swaying in the wind", "duration_seconds": "3", "fps": "24",
                        "motion_strength": "0.7"}
VISUALIZR_CHARACTER = {"character_id": "assistant", "action": "greeting", "emotion": "happy", "background": "office",
                       "duration_seconds": 5, "resolution": "1024x1024", "animation_style": "natural"}





def test_visualizr_documented_requests(alone, files):
    base = alone.urls["visualizr"]
    pause(alone)
    try:
        video = requests.post(f"{base}/api/v1/generate/video", json=VISUALIZR_VIDEO,
                              headers={"Content-Type": "application/json", "Authorization": "Bearer YOUR_API_KEY"},
                              timeout=30)
        from_image = requests.post(f"{base}/api/v1/generate/video/from-image", data=VISUALIZR_FROM_IMAGE,
                                   files={"image": ("image.jpg", (files / "image.jpg").read_bytes())}, timeout=30)
        character = requests.post(f"{base}/api/v1/generate/character-animation", json=VISUALIZR_CHARACTER, timeout=30)
        client = VisualizrClient(base_url=base, api_key="your-api-key")
        result = client.generate_video("A beautiful sunset over mountains")  # the SDK's usage lines
        answers = [video, from_image, character]
        for r in answers:
            assert r.status_code == 200 and r.json()["status"] in ("pending", "processing"), r.text
        assert character.json()["character_id"] == "assistant"
        jobs = {name: native_job(alone, r["request_id"]) for name, r in
                (("video", video.json()), ("from_image", from_image.json()), ("character", character.json()),
                 ("sdk", result))}
        assert {n: j["job"]["model"] for n, j in jobs.items()} == {
            "video": "wan-t2v", "from_image": "wan-i2v", "character": "wan-i2v", "sdk": "wan-t2v"}
        params = jobs["video"]["job"]["params"]
        assert (params["width"], params["height"], params["num_frames"], params["seed"]) == (1024, 1024, 25, 42)
        assert video.json()["adjusted"] == [
            "model stable-video-diffusion→wan-t2v (no stable-video-diffusion model here does text-to-video: the "
            "kind's default model)", "num_frames 24→25 (wan2.1 takes 4k+1 frames (e.g. 17, 33, 81))"]
        assert jobs["from_image"]["job"]["params"]["num_frames"] == 73  # 3 s × 24 fps, fitted to 4k+1
        assert jobs["character"]["job"]["params"]["prompt"] == "a friendly assistant greeting, happy, office, natural motion"
        for r in (video.json(), from_image.json(), character.json(), result):
            gone = requests.delete(f"{base}/api/v1/generate/{r['request_id']}", timeout=30).json()
            assert gone["status"] == "cancelled", gone
    finally:
        resume(alone)
    # The same endpoint and SDK at a size this CPU makes in seconds, to the end.
    small = client.generate_video("A beautiful sunset over mountains", width=32, height=32, num_frames=5,
                                  num_inference_steps=2)
    final = client.wait_for_completion(small["request_id"])
    assert final["result"]["metadata"]["resolution"] == "32x32", final
    assert requests.get(base + final["result"]["video_url"], timeout=30).headers["Content-Type"] == "video/mp4"


# -- Wan2.1 (seed 004) -----------------------------------------------------------------------------



def test_wan_examples(alone, files, tmp_path):
    base = alone.urls["wan"]
    paths = {"/path/to/image.jpg": str(files / "image.jpg"), "/path/to/video.mp4": str(files / "video.mp4")}
    pause(alone)
    try:
        queued = {kind: json.loads(curl(line, wan.SEED_BASE, base, tmp_path, **paths))
                  for kind, line in (("text-to-video", wan.CURL_T2V), ("image-to-video", wan.CURL_I2V))}
        for kind, answer in queued.items():
            assert answer["status"] == "processing" and answer["message"] == "Video generation started", answer
            job = native_job(alone, answer["job_id"])
            assert (job["kind"], job["job"]["model"], job["job"]["params"]["num_frames"]) == (
                kind, {"text-to-video": "wan-t2v", "image-to-video": "wan-i2v"}[kind], 65), job
            cancel(alone, answer["job_id"])
    finally:
        resume(alone)
    # video-to-video as printed runs here in seconds: the 12-frame 64×48 clip keeps its size.
    answer = json.loads(curl(wan.CURL_V2V, wan.SEED_BASE, base, tmp_path, **paths))
    poll(f"{base}/api/v1/job/{answer['job_id']}", lambda b: b["status"] in ("completed", "failed"))
    status = json.loads(curl(wan.CURL_JOB, wan.SEED_BASE, base, tmp_path, **{wan.EXAMPLE_ID: answer["job_id"]}))
    assert status["status"] == "completed", status
    out = tmp_path / "out.mp4"
    out.write_bytes(requests.get(base + status["output_path"][1:], timeout=30).content)
    assert ffprobe(out) == {"codec": "h264", "size": (64, 48), "fps": "24/1", "frames": 9}
    listed = {m["id"] for m in json.loads(curl(wan.CURL_MODELS, wan.SEED_BASE, base, tmp_path))["models"]}
    assert listed == {"wan-t2v", "wan-i2v"}


# -- a refused request leaves nothing (item 6) ----------------------------------------------------------
def spool_state(d: Daemon) -> dict:
    """What a request could leave: inbox entries (staging included), outbox folders (and
    reservations), the queue, the native job list."""
    inbox = sorted(str(p.relative_to(d.root)) for p in (d.root / "inbox").rglob("*"))
    outbox = sorted(os.listdir(d.root / "outbox"))
    reserved = sorted(str(p.relative_to(d.root)) for p in (d.root / "outbox").glob("*/.reserved*"))
    jobs = sorted(j["id"] for j in requests.get(f"{d.api}/api/v1/jobs?limit=1000", timeout=10).json()["jobs"])
    return {"inbox": inbox, "outbox": outbox, "reserved": reserved, "queue": sorted(os.listdir(d.root / "queue")),
            "jobs": jobs}


def refusals(urls: dict[str, str], files: Path) -> list[tuple[str, requests.Response, int]]:
    """(front, answer, the status it must have) of requests each front refuses, several of
    them only once the job is built (the daemon's intake checks, made before anything is written)."""
    long_text = "a" * 100_001  # over the speaking kinds' text limit
    playlist = b"#EXTM3U\n#EXT-X-VERSION:3\n#EXTINF:1,\nfile:///etc/passwd\n"
    image = (files / "image.jpg").read_bytes()
    hg, st, pk, vz, wn = (urls[n] for n in NAMES)
    post = requests.post
    return [
        ("heygem", post(f"{hg}/api/generate", data={}, timeout=30), 400),
        ("heygem", post(f"{hg}/api/generate", data={"text": long_text}, timeout=30), 400),
        ("heygem", post(f"{hg}/api/generate", data={"text": "Hi"}, files={"video": ("v.mp4", playlist)}, timeout=30), 400),
        ("story", post(f"{st}/api/v1/generate", json={}, timeout=30), 400),
        ("story", post(f"{st}/api/v1/generate", json={"text": long_text}, timeout=30), 400),
        ("paksatalker", post(f"{pk}/api/v1/generate/fusion-video", data={"resolution": "720p"}, timeout=30), 400),
        ("paksatalker", post(f"{pk}/api/v1/generate/fusion-video", data={"text": long_text}, timeout=30), 400),
        ("paksatalker", post(f"{pk}/api/v1/generate/fusion-video", files={"audio": ("a.wav", playlist)},
                             data={"text": "Hi"}, timeout=30), 415),
        ("paksatalker", post(f"{pk}/api/v1/generate/video-from-prompt", data={"prompt": "Hi", "voice": "nobody"},
                             timeout=30), 400),
        ("visualizr", post(f"{vz}/api/v1/generate/video", json={"prompt": "x", "model": "no-such-model"}, timeout=30), 404),
        ("visualizr", post(f"{vz}/api/v1/generate/video", json={"prompt": "x", "width": 8}, timeout=30), 400),
        ("visualizr", post(f"{vz}/api/v1/generate/video", json={"prompt": "x", "width": 4096, "height": 4096,
                                                                 "num_frames": 2000}, timeout=30), 400),
        ("visualizr", post(f"{vz}/api/v1/generate/video/from-image", files={"image": ("i.png", playlist)}, timeout=30), 400),
        ("visualizr", post(f"{vz}/api/v1/generate/character-animation", json={"character_id": "nobody"}, timeout=30), 404),
        ("wan", post(f"{wn}/api/v1/generate/text-to-video", json={"num_frames": 8}, timeout=30), 400),
        ("wan", post(f"{wn}/api/v1/generate/text-to-video", json={"prompt": "x", "num_frames": 500}, timeout=30), 400),
        ("wan", post(f"{wn}/api/v1/generate/image-to-video", files={"image": ("i.jpg", playlist)}, timeout=30), 400),
        ("wan", post(f"{wn}/api/v1/generate/image-to-video", files={"image": ("i.jpg", image)},
                     data={"negative_prompt": long_text}, timeout=30), 400),
        ("wan", post(f"{wn}/api/v1/generate/video-to-video", files={"video": ("v.mp4", playlist)}, timeout=30), 400),
    ]


def test_a_refused_request_leaves_nothing(alone, files):
    wait_for(lambda: not spool_state(alone)["queue"] and not any(
        w.get("job") for w in alone.heartbeat["workers"]), timeout=60, what="the host idle")
    before = spool_state(alone)
    for front, r, status in refusals(alone.urls, files):
        assert r.status_code == status, (front, r.status_code, r.text)
    # A job submitted after them is accepted: any drop they had made would be too.
    sentinel = requests.post(f"{alone.api}/api/v1/jobs", json={"kind": "probe"}, timeout=10).json()["id"]
    wait_for(lambda: native_job(alone, sentinel)["state"] == "completed", what="the sentinel job")
    after = spool_state(alone)
    for key in ("outbox", "jobs"):
        after[key].remove(sentinel)
    assert after == before


# -- none or several models for a kind ---------------------------------------------------------------
def test_start_up_names_the_key_where_a_kind_has_no_model_or_several(mixed):
    lines = host_lines(mixed)
    for name in ("visualizr", "wan"):
        warnings = [m for level, m in lines[name] if level == "warning"]
        assert any(m.startswith("no registry model does text-to-video: put one in [registry] dir")
                   and m.endswith("or set [kinds.text-to-video] model") for m in warnings), warnings
        assert ("several registry models do image-to-video (svd, wan-i2v): set [kinds.image-to-video] model to the "
                "one to use") in warnings, warnings
    assert any("video-to-video" in m for _, m in lines["wan"]) and not any("video-to-video" in m for _, m in lines["visualizr"])


def test_requests_name_the_key_and_a_documented_name_maps_to_its_family(mixed, files):
    vz, wn = mixed.urls["visualizr"], mixed.urls["wan"]
    before = spool_state(mixed)
    r = requests.post(f"{vz}/api/v1/generate/video", json=VISUALIZR_VIDEO, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "MODEL_NOT_FOUND", r.text
    assert "stable-video-diffusion" in r.json()["error"]["message"] and "[kinds.text-to-video] model" in r.text
    image = {"image": ("image.jpg", (files / "image.jpg").read_bytes())}
    r = requests.post(f"{vz}/api/v1/generate/video/from-image", data=VISUALIZR_FROM_IMAGE, files=image, timeout=30)
    assert r.status_code == 404 and "several registry models do image-to-video (svd, wan-i2v)" in r.text, r.text
    assert "[kinds.image-to-video] model" in r.text
    for path, upload in (("text-to-video", None), ("image-to-video", image)):
        r = requests.post(f"{wn}/api/v1/generate/{path}", files=upload, data={"prompt": "x"}, timeout=30)
        assert r.status_code == 503 and r.json()["error"] == "Model not loaded", r.text
        assert f"[kinds.{path}] model" in r.json()["reason"], r.json()
    assert spool_state(mixed) == before
    # The document's name for Stable Video Diffusion runs this host's SVD model.
    r = requests.post(f"{vz}/api/v1/generate/video/from-image", data={**VISUALIZR_FROM_IMAGE, "model": "stable-video-diffusion"},
                      files=image, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["adjusted"][0] == "model stable-video-diffusion→svd (this host's stable-video-diffusion model)"
    assert native_job(mixed, r.json()["request_id"])["job"]["model"] == "svd"


def test_doctor_names_the_key_before_any_request(mixed):
    out = subprocess.run([sys.executable, "-m", "daemon", "doctor"], cwd=REPO, env=base_env(**mixed.settings),
                         capture_output=True, text=True, timeout=120)
    lines = out.stdout.splitlines()
    for name in ("visualizr", "wan"):
        assert (f"[warn] compat.{name}: several registry models do image-to-video (svd, wan-i2v): set "
                "[kinds.image-to-video] model to the one to use") in lines, out.stdout
        assert any(re.match(rf"\[warn\] compat\.{name}: no registry model does text-to-video: .*or set "
                            r"\[kinds\.text-to-video\] model$", line) for line in lines), out.stdout
