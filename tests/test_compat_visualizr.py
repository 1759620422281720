"""The Visualizr personality (seed 003) through a real daemon, real `requests`, the seed's
own Python SDK class, an aiohttp WebSocket client and ffprobe.

One daemon with one CPU worker serves tiny random-weight models (scripts/tiny_models.py:
Wan2.1 text- and image-to-video, Stable Video Diffusion) whose registry entries set tiny
defaults (the model's own defaults, which the personality leaves in place where the
document gives none), plus broken entries: an out-of-memory pipeline (the test plugin), a
corrupt folder and a missing one. [api] tokens are set, so every call but health needs the
bearer token. The character is scikit-image's public-domain astronaut portrait. The tests
run in file order on the one daemon: the model, asset and metrics tests count the jobs the
generation tests made.
"""

from __future__ import annotations

import asyncio
import http.client
import inspect
import json
import shutil
import subprocess
import time
from datetime import datetime, timedelta, timezone
from io import BytesIO
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
import requests
from PIL import Image

from tests.support import Daemon

TOKEN = "visualizr-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TINY = {"width": 32, "height": 32, "num_frames": 5, "num_inference_steps": 2}
ERROR_KEYS = {"code", "message", "details"}


# -- the seed document's Python SDK, as printed (only the base URL and key differ in use) ----

class VisualizrClient:
    def __init__(self, base_url="http://localhost:8002", api_key=None):
        self.base_url = base_url
        self.api_key = api_key
        self.headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {api_key}" if api_key else None
        }
    
    def generate_video(self, prompt, **kwargs):
        """Generate video from text prompt"""
        data = {"prompt": prompt, **kwargs}
        response = requests.post(
            f"{self.base_url}/api/v1/generate/video",
            headers=self.headers,
            json=data
        )
        return response.json()
    
    def get_status(self, request_id):
        """Get generation status"""
        response = requests.get(
            f"{self.base_url}/api/v1/generate/status/{request_id}",
            headers=self.headers
        )
        return response.json()
    
    def wait_for_completion(self, request_id, timeout=300):
        """Wait for generation to complete"""
        start_time = time.time()
        while time.time() - start_time < timeout:
            status = self.get_status(request_id)
            if status["status"] == "completed":
                return status
            elif status["status"] == "failed":
                raise Exception(f"Generation failed: {status['error']['message']}")
            time.sleep(2)
        raise TimeoutError("Generation timed out")


# -- helpers ------------------------------------------------------------------------------------

def ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=width,height,r_frame_rate,nb_read_frames,codec_name:format=format_name",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    return {**doc["streams"][0], "format": doc["format"]["format_name"]}


def png(image: Image.Image) -> bytes:
    buf = BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def astronaut(size: int = 64) -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((size, size))


def assert_error(r: requests.Response, status: int, code: str, *words: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    assert body["error"]["code"] == code, body
    for word in words:
        assert word in body["error"]["message"], (word, body)
    return body["error"]


class Api:
    def __init__(self, url: str, daemon: Daemon):
        self.url, self.daemon = url, daemon

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, headers=kw.pop("headers", AUTH), timeout=30, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return requests.post(self.url + path, headers=kw.pop("headers", AUTH), timeout=30, **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return requests.delete(self.url + path, headers=kw.pop("headers", AUTH), timeout=30, **kw)

    def status(self, request_id: str) -> dict:
        r = self.get(f"/api/v1/generate/status/{request_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, request_id: str, states=("completed", "failed", "cancelled"), timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            doc = self.status(request_id)
            if doc["status"] in states:
                return doc
            time.sleep(0.1)
        raise AssertionError(f"{request_id}: {doc}\n{self.daemon.log()}")

    def generate(self, **body) -> dict:
        r = self.post("/api/v1/generate/video", json=body)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def api(tiny_models, tmp_path_factory):
    base = tmp_path_factory.mktemp("visualizr")
    corrupt = base / "corrupt-model"
    shutil.copytree(tiny_models / "wan-t2v", corrupt)
    (corrupt / "model_index.json").write_text('{"_class_name": "WanPipeline", ')
    face = base / "assistant.png"
    face.write_bytes(png(astronaut(128)))
    models = {
        "wan-t2v": {"path": str(tiny_models / "wan-t2v"), "defaults": TINY},
        "wan-i2v": {"path": str(tiny_models / "wan-i2v"), "defaults": TINY},
        "svd": {"path": str(tiny_models / "svd"), "defaults": TINY},
        "oom": {"path": str(tiny_models / "wan-t2v"), "kinds": ["text-to-video"], "defaults": TINY,
                "pipeline": "vidspool_testkinds.oom:OutOfMemoryWanPipeline"},
        "corrupt": {"path": str(corrupt), "kinds": ["text-to-video"], "defaults": TINY},
        "missing": {"path": str(base / "not-here"), "kinds": ["text-to-video"], "defaults": TINY},
    }
    characters = {"assistant": {"image": str(face), "model": "svd",
                                "prompt": "an astronaut {action}, {emotion} face, {background}, {animation_style} motion"}}
    d = Daemon(base / "spool", VIDSPOOL_COMPAT__VISUALIZR__LISTEN="127.0.0.1:0",
               VIDSPOOL_COMPAT__VISUALIZR__STYLES=json.dumps({"cinematic": "cinematic lighting, film grain"}),
               VIDSPOOL_API__TOKENS=json.dumps([TOKEN]), VIDSPOOL_API__MAX_QUEUED_JOBS="3",
               VIDSPOOL_API__MAX_EVENT_STREAMS="2",
               VIDSPOOL_MODELS=json.dumps(models), VIDSPOOL_CHARACTERS=json.dumps(characters),
               VIDSPOOL_KINDS=json.dumps({"text-to-video": {"model": "wan-t2v"}, "image-to-video": {"model": "wan-i2v"}})).start()
    yield Api(d.heartbeat["compat_urls"]["visualizr"], d)
    d.stop()


# -- generation -------------------------------------------------------------------------------------

def test_the_sdk_generates_a_video_with_the_documented_usage(api, tmp_path):
    client = VisualizrClient(base_url=api.url, api_key=TOKEN)
    result = client.generate_video("A beautiful sunset over mountains")
    assert result["request_id"].startswith("video_req_") and result["status"] in ("pending", "processing"), result
    assert set(result) >= {"request_id", "status", "estimated_time_seconds", "queue_position", "created_at"}
    datetime.fromisoformat(result["created_at"].replace("Z", "+00:00"))
    final_result = client.wait_for_completion(result["request_id"])
    print(f"Video URL: {final_result['result']['video_url']}")

    vid = result["request_id"].replace("video_req_", "video_")
    assert final_result["result"]["video_url"] == f"/assets/video/{vid}.mp4"
    assert final_result["result"]["thumbnail_url"] == f"/assets/video/{vid}_thumb.jpg"
    assert final_result["result"]["preview_gif_url"] == f"/assets/video/{vid}_preview.gif"
    assert final_result["progress"] == 100 and final_result["processing_time_seconds"] > 0
    r = requests.get(api.url + final_result["result"]["video_url"], headers=client.headers, timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == "video/mp4"
    (tmp_path / "video.mp4").write_bytes(r.content)
    info = ffprobe(tmp_path / "video.mp4")
    # The model's own defaults (its registry entry): 32×32, 5 frames, at Wan's 16 fps.
    assert (info["width"], info["height"], int(info["nb_read_frames"]), info["r_frame_rate"]) == (32, 32, 5, "16/1"), info
    assert info["codec_name"] == "h264" and "mp4" in info["format"]
    meta = final_result["result"]["metadata"]
    assert meta == {"duration_seconds": meta["duration_seconds"], "fps": 16, "resolution": "32x32",
                    "file_size_bytes": len(r.content), "format": "mp4", "codec": "h264", "bitrate_kbps": meta["bitrate_kbps"]}
    assert abs(meta["duration_seconds"] - 5 / 16) < 0.05
    for key in ("thumbnail_url", "preview_gif_url"):
        got = requests.get(api.url + final_result["result"][key], headers=client.headers, timeout=30)
        assert got.status_code == 200 and Image.open(BytesIO(got.content)).format in ("JPEG", "GIF")


def test_documented_fields_fitting_and_style(api):
    out = api.generate(prompt="a red fox in snow", negative_prompt="blurry", width=40, height=30, num_frames=8, fps=8,
                       num_inference_steps=2, guidance_scale=7.5, seed=42, model="wan-t2v", style="cinematic")
    assert out["adjusted"] == ["width 40→48 (wan2.1 takes multiples of 16)", "height 30→32 (wan2.1 takes multiples of 16)",
                               "num_frames 8→9 (wan2.1 takes 4k+1 frames (e.g. 17, 33, 81))"], out
    done = api.wait(out["request_id"])
    assert done["status"] == "completed", done
    assert done["result"]["metadata"]["resolution"] == "48x32" and done["result"]["metadata"]["fps"] == 8
    assert done["adjusted"] == out["adjusted"]
    job = json.loads((api.daemon.root / "outbox" / out["request_id"] / "status.json").read_text())["job"]
    assert job["params"]["prompt"] == "a red fox in snow, cinematic lighting, film grain"
    assert (job["params"]["seed"], job["params"]["guidance_scale"], job["params"]["num_frames"]) == (42, 7.5, 9)
    unknown = api.generate(prompt="a fox", style="anime", steps=3)
    assert unknown["ignored"] == ["style='anime' (no [compat.visualizr] styles entry for it, configured: cinematic)",
                                  "steps (not a field of this endpoint)"]
    assert api.wait(unknown["request_id"])["ignored"] == unknown["ignored"]


def test_image_to_video_from_a_form(api, tmp_path):
    r = api.post("/api/v1/generate/video/from-image",
                 files={"image": ("photo.png", png(astronaut(64)), "image/png")},
                 data={"motion_prompt": "gentle swaying in the wind", "duration_seconds": "1", "fps": "8",
                       "motion_strength": "0.7"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["request_id"].startswith("video_req_") and {"status", "estimated_time_seconds", "created_at"} <= set(out)
    assert out["adjusted"] == ["num_frames 8→9 (wan2.1-i2v takes 4k+1 frames (e.g. 17, 33, 81))"]
    assert out["ignored"] == ["motion_strength=0.7 (vidspool's image-to-video jobs take no motion control)"]
    done = api.wait(out["request_id"])
    assert done["status"] == "completed", done
    assert done["ignored"] == out["ignored"]
    video = api.get(done["result"]["video_url"])
    (tmp_path / "i2v.mp4").write_bytes(video.content)
    info = ffprobe(tmp_path / "i2v.mp4")
    assert (info["width"], info["height"], int(info["nb_read_frames"]), info["r_frame_rate"]) == (32, 32, 9, "8/1"), info
    assert_error(api.post("/api/v1/generate/video/from-image", data={"motion_prompt": "no image"}),
                 400, "INVALID_PARAMETERS", "image is required")
    assert_error(api.post("/api/v1/generate/video/from-image", files={"image": ("p.png", png(astronaut(32)), "image/png")},
                          data={"fps": "fast"}), 400, "INVALID_PARAMETERS", "fps")


def test_character_animation_of_a_configured_character(api, tmp_path):
    r = api.post("/api/v1/generate/character-animation", json={
        "character_id": "assistant", "action": "greeting", "emotion": "happy", "duration_seconds": 1,
        "resolution": "30x30", "animation_style": "natural"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["request_id"].startswith("anim_req_") and out["character_id"] == "assistant"
    assert out["adjusted"] == ["width 30→32 (stable-video-diffusion takes multiples of 8)",
                               "height 30→32 (stable-video-diffusion takes multiples of 8)"]
    done = api.wait(out["request_id"])
    assert done["status"] == "completed", done
    assert done["result"]["video_url"] == f"/assets/video/{out['request_id'].replace('anim_req_', 'anim_')}.mp4"
    status = json.loads((api.daemon.root / "outbox" / out["request_id"] / "status.json").read_text())
    # The character's prompt template, filled; Stable Video Diffusion takes no prompt, and says so.
    assert status["model"] == "svd" and status["job"]["params"]["prompt"] is None
    assert out["ignored"] == done["ignored"] == [
        "prompt='an astronaut greeting, happy face, natural motion' (stable-video-diffusion takes no text prompt)"]
    (tmp_path / "anim.mp4").write_bytes(api.get(done["result"]["video_url"]).content)
    info = ffprobe(tmp_path / "anim.mp4")
    # duration_seconds 1 at Stable Video Diffusion's 7 fps: 7 frames.
    assert (info["width"], info["height"], int(info["nb_read_frames"]), info["r_frame_rate"]) == (32, 32, 7, "7/1"), info
    assert_error(api.post("/api/v1/generate/character-animation", json={"character_id": "nobody"}),
                 404, "CHARACTER_NOT_FOUND", "nobody", "assistant")
    assert_error(api.post("/api/v1/generate/character-animation", json={"character_id": "assistant", "resolution": "big"}),
                 400, "INVALID_PARAMETERS", "resolution")


# -- errors, tokens, cancel ------------------------------------------------------------------------------

def test_bearer_tokens(api):
    for path in ("/api/v1/models", "/api/v1/metrics", "/api/v1/assets/videos", "/api/v1/generate/status/video_req_00"):
        assert_error(api.get(path, headers={}), 401, "UNAUTHORIZED")
        assert_error(api.get(path, headers={"Authorization": "Bearer wrong-token-0123456789"}), 401, "UNAUTHORIZED")
    assert_error(api.post("/api/v1/generate/video", json={"prompt": "x"}, headers={}), 401, "UNAUTHORIZED")
    assert api.get("/api/v1/models").status_code == 200
    assert api.get("/api/v1/health", headers={}).status_code == 200


def test_error_codes_of_the_table(api):
    gen = "/api/v1/generate/video"
    for body in ({}, {"prompt": ""}, {"prompt": "   "}, {"prompt": 7}):
        assert_error(api.post(gen, json=body), 400, "INVALID_PROMPT", "prompt")
    assert_error(api.post(gen, json={"prompt": "x" * 10_001}), 400, "INVALID_PROMPT", "prompt")
    assert_error(api.post(gen, json={"prompt": "x", "width": "wide"}), 400, "INVALID_PARAMETERS", "width")
    assert_error(api.post(gen, json={"prompt": "x", "num_frames": 0}), 400, "INVALID_PARAMETERS", "num_frames")
    assert_error(api.post(gen, json={"prompt": "x", "guidance_scale": 500}), 400, "INVALID_PARAMETERS", "guidance_scale")
    assert_error(api.post(gen, data="{not json", headers={**AUTH, "Content-Type": "application/json"}),
                 400, "INVALID_PARAMETERS", "JSON")
    assert_error(api.post(gen, json={"prompt": "x", "model": "sora"}), 404, "MODEL_NOT_FOUND", "sora", "wan-t2v")
    assert_error(api.post(gen, json={"prompt": "x", "model": "svd"}), 400, "INVALID_PARAMETERS", "image-to-video")
    # Refused by the daemon's intake (over [limits] max_frame_pixels): still this request's error.
    assert_error(api.post(gen, json={"prompt": "x", "width": 4096, "height": 4096, "num_frames": 1997}),
                 400, "INVALID_PARAMETERS", "frame pixels")
    assert_error(api.get("/api/v1/generate/status/video_req_0000"), 404, "REQUEST_NOT_FOUND")
    assert_error(api.delete("/api/v1/generate/video_req_0000"), 404, "REQUEST_NOT_FOUND")
    assert_error(api.get("/api/v1/models/nope"), 404, "MODEL_NOT_FOUND")
    assert_error(api.get("/api/v1/no-such-path"), 404, "NOT_FOUND")

    # Failures of the run itself: in the failed status, with the document's codes.
    jobs = {"oom": "INSUFFICIENT_GPU_MEMORY", "corrupt": "MODEL_LOAD_FAILED", "missing": "MODEL_NOT_FOUND"}
    ids = {model: api.generate(prompt="a fox", model=model)["request_id"] for model in jobs}
    # A PNG by its first bytes (so accepted), broken after them: the run fails decoding it.
    r = api.post("/api/v1/generate/video/from-image", files={"image": ("photo.png", b"\x89PNG\r\n\x1a\nnot a picture",
                                                                        "image/png")})
    assert r.status_code == 200, r.text
    ids["not-an-image"], jobs["not-an-image"] = r.json()["request_id"], "GENERATION_FAILED"
    for model, code in jobs.items():
        done = api.wait(ids[model])
        assert done["status"] == "failed", done
        assert set(done["error"]) == ERROR_KEYS and done["error"]["code"] == code, done
        assert done["error"]["details"].startswith("vidspool error code ") and done["failed_at"].endswith("Z")
    assert api.status(ids["not-an-image"])["error"]["details"] == "vidspool error code unsupported_input"
    assert "out of memory" in api.status(ids["oom"])["error"]["message"].lower()
    assert "corrupt" in api.status(ids["corrupt"])["error"]["message"]
    assert api.get("/api/v1/health", headers={}).json()["status"] == "healthy"  # the worker stayed up


def test_queue_full_and_cancel(api):
    long = api.generate(prompt="a long one", num_inference_steps=1000)
    running = api.wait(long["request_id"], states=("processing",))
    deadline = time.monotonic() + 60
    while running["current_step"] != "frame_generation" and time.monotonic() < deadline:
        running = api.status(long["request_id"])
        time.sleep(0.1)
    assert running["current_step"] == "frame_generation" and running["started_at"], running
    queued = [api.generate(prompt=f"waiting {i}") for i in range(3)]
    pending = api.status(queued[0]["request_id"])
    assert pending["status"] == "pending" and pending["queue_position"] == 1, pending
    assert [q["queue_position"] for q in queued] == [1, 2, 3]
    assert all(q["estimated_time_seconds"] > 0 for q in queued), queued
    assert pending["estimated_remaining_seconds"] > 0
    r = api.post("/api/v1/generate/video", json={"prompt": "one too many"})
    assert_error(r, 503, "QUEUE_FULL", "3 requests are waiting")
    assert r.headers["Retry-After"] == "10"
    for q in queued:
        r = api.delete(f"/api/v1/generate/{q['request_id']}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "cancelled" and body["message"] == "Generation request cancelled successfully", body
        assert body["cancelled_at"].endswith("Z") and api.status(q["request_id"])["status"] == "cancelled"
    r = api.delete(f"/api/v1/generate/{long['request_id']}")  # running: stops at its next step
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert api.status(long["request_id"])["status"] == "cancelled"
    assert_error(api.delete(f"/api/v1/generate/{long['request_id']}"), 409, "REQUEST_ALREADY_ENDED", "cancelled")


# -- models -------------------------------------------------------------------------------------------------

def test_models_details_load_and_unload(api):
    import diffusers  # here: only this test needs the pipelines' signatures

    listed = {m["id"]: m for m in api.get("/api/v1/models").json()["models"]}
    assert {"wan-t2v", "wan-i2v", "svd", "oom", "corrupt", "missing"} <= set(listed)
    doc_keys = {"id", "name", "description", "type", "max_resolution", "max_duration_seconds", "supported_formats",
                "gpu_memory_required_gb", "average_generation_time_seconds"}
    for m in listed.values():
        assert doc_keys <= set(m), m
    assert listed["wan-t2v"]["type"] == "text-to-video" and listed["svd"]["type"] == "image-to-video"
    assert listed["wan-t2v"]["average_generation_time_seconds"] > 0  # measured: earlier tests ran it
    assert listed["wan-t2v"]["gpu_memory_required_gb"] > 0 and listed["missing"]["available"] is False
    assert listed["wan-i2v"]["description"] == "Wan2.1 image-to-video", listed["wan-i2v"]  # the kind said once
    assert listed["wan-t2v"]["description"] == "Wan2.1 text-to-video", listed["wan-t2v"]

    details = api.get("/api/v1/models/wan-t2v").json()
    caps = details["capabilities"]
    assert caps["min_resolution"] == "16x16" and caps["supports_negative_prompt"] is True and caps["default_fps"] == 16
    assert caps["frame_rule"].startswith("4k+1") and caps["max_fps"] == 120 and caps["supported_formats"] == ["mp4"]
    assert details["parameters"]["num_inference_steps"] == {"min": 1, "max": 1000, "default": 2,
                                                            "description": "Number of denoising steps"}
    # No [models] or [kinds] default: the one its pipeline uses, not null.
    pipeline_default = inspect.signature(diffusers.WanPipeline.__call__).parameters["guidance_scale"].default
    assert details["parameters"]["guidance_scale"] == {"min": 0, "max": 100, "default": pipeline_default,
                                                       "description": "Controls adherence to prompt"}
    svd = api.get("/api/v1/models/svd").json()["parameters"]["guidance_scale"]["default"]
    assert svd == inspect.signature(diffusers.StableVideoDiffusionPipeline.__call__).parameters["max_guidance_scale"].default
    perf = details["performance"]
    assert perf["total_generations"] >= 3 and 0 < perf["success_rate_percent"] <= 100, perf
    assert api.get("/api/v1/models/svd").json()["capabilities"]["supports_negative_prompt"] is False

    r = api.post("/api/v1/models/svd/load")
    assert r.status_code == 200 and r.json()["model_id"] == "svd" and r.json()["status"] in ("loading", "loaded"), r.text
    deadline = time.monotonic() + 60
    while "svd" not in [m["id"] for m in api.get("/api/v1/health").json()["loaded_models"]] and time.monotonic() < deadline:
        time.sleep(0.1)
    loaded = {m["id"]: m for m in api.get("/api/v1/health").json()["loaded_models"]}
    assert loaded["svd"]["memory_usage_gb"] > 0, loaded
    req = api.get("/api/v1/models/svd").json()["requirements"]
    assert req["vram_usage_gb"] > 0 and req["estimated_load_time_seconds"] > 0, req
    again = api.post("/api/v1/models/svd/load").json()
    assert again["status"] == "loaded" and again["estimated_load_time_seconds"] > 0
    r = api.post("/api/v1/models/svd/unload")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "unloaded" and body["freed_memory_gb"] > 0 and body["unloaded_at"].endswith("Z"), body
    assert "svd" not in [m["id"] for m in api.get("/api/v1/health").json()["loaded_models"]]
    assert_error(api.post("/api/v1/models/nope/load"), 404, "MODEL_NOT_FOUND")


# -- assets ---------------------------------------------------------------------------------------------------

def test_assets_pagination_filters_and_files(api):
    all_videos = api.get("/api/v1/assets/videos").json()
    total = all_videos["total_count"]
    assert total >= 4 and all_videos["has_more"] is False and len(all_videos["videos"]) == total
    created = [v["created_at"] for v in all_videos["videos"]]
    assert created == sorted(created, reverse=True)  # newest first
    first = all_videos["videos"][0]
    assert set(first) == {"id", "url", "thumbnail_url", "prompt", "model", "metadata", "created_at"}
    assert set(first["metadata"]) == {"duration_seconds", "resolution", "fps", "file_size_bytes"}
    page = api.get("/api/v1/assets/videos", params={"limit": 1, "offset": 1}).json()
    assert page["total_count"] == total and page["has_more"] is True and page["videos"] == all_videos["videos"][1:2]
    last = api.get("/api/v1/assets/videos", params={"limit": 1, "offset": total - 1}).json()
    assert last["has_more"] is False and len(last["videos"]) == 1
    i2v = api.get("/api/v1/assets/videos", params={"model": "wan-i2v"}).json()
    assert i2v["total_count"] >= 1 and {v["model"] for v in i2v["videos"]} == {"wan-i2v"}
    today = datetime.now(timezone.utc).date()
    assert api.get("/api/v1/assets/videos", params={"start_date": str(today + timedelta(days=1))}).json()["total_count"] == 0
    assert api.get("/api/v1/assets/videos", params={"end_date": str(today - timedelta(days=1))}).json()["total_count"] == 0
    assert api.get("/api/v1/assets/videos", params={"start_date": f"{today}T00:00:00Z", "end_date": str(today)}).json()["total_count"] == total
    assert_error(api.get("/api/v1/assets/videos", params={"limit": 101}), 400, "INVALID_PARAMETERS", "limit")
    assert_error(api.get("/api/v1/assets/videos", params={"limit": 0}), 400, "INVALID_PARAMETERS", "limit")
    assert_error(api.get("/api/v1/assets/videos", params={"offset": "x"}), 400, "INVALID_PARAMETERS", "offset")
    assert_error(api.get("/api/v1/assets/videos", params={"start_date": "yesterday"}), 400, "INVALID_PARAMETERS", "start_date")

    video = i2v["videos"][0]
    details = api.get(f"/api/v1/assets/videos/{video['id']}").json()
    assert details["parameters"]["width"] == 32 and details["parameters"]["num_frames"] == 9 and details["parameters"]["fps"] == 8
    assert details["metadata"]["codec"] == "h264" and details["metadata"]["bitrate_kbps"] > 0
    request_id = details["generation_info"]["request_id"]
    assert request_id == video["id"].replace("video_", "video_req_", 1) and details["generation_info"]["processing_time_seconds"] > 0
    # Traversal and names that are not a video's files: 404, never a file outside the job.
    host = urlsplit(api.url)
    for path in (f"/assets/video/..%2F..%2F{request_id}%2Fstatus.json", f"/assets/video/{video['id']}_status.json",
                 "/assets/video/..%2f..%2fetc%2fpasswd", f"/assets/video/{video['id']}.mp4%00.txt",
                 f"/assets/video/%2e%2e/{video['id']}.mp4", "/assets/video/" + "..%5C..%5Cconfig.toml"):
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
        conn.request("GET", path, headers=AUTH)
        answer = conn.getresponse()
        assert answer.status == 404 and json.loads(answer.read())["error"]["code"] == "NOT_FOUND", path
        conn.close()
    assert api.get(f"{video['url']}?access_token={TOKEN}", headers={}).status_code == 200  # <video src> style

    outbox = api.daemon.root / "outbox" / request_id
    sizes = sum((outbox / n).stat().st_size for n in ("video.mp4", "thumb.jpg", "preview.gif"))
    r = api.delete(f"/api/v1/assets/videos/{video['id']}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["video_id"] == video["id"] and body["status"] == "deleted" and body["freed_space_bytes"] == sizes > 0
    assert not any((outbox / n).exists() for n in ("video.mp4", "thumb.jpg", "preview.gif"))
    assert api.get(video["url"]).status_code == 404
    assert_error(api.delete(f"/api/v1/assets/videos/{video['id']}"), 404, "REQUEST_NOT_FOUND")
    assert_error(api.get(f"/api/v1/assets/videos/{video['id']}"), 404, "REQUEST_NOT_FOUND")
    assert api.get("/api/v1/assets/videos").json()["total_count"] == total - 1
    assert api.status(request_id)["status"] == "completed"


# -- health, metrics, WebSocket -----------------------------------------------------------------------------------

def test_health_and_metrics(api):
    health = api.get("/api/v1/health", headers={}).json()
    assert health["status"] == "healthy" and health["version"] and health["uptime_seconds"] >= 1
    assert health["gpu_info"] == {"available": False, "count": 0, "devices": []}  # CPU workers
    assert isinstance(health["loaded_models"], list) and all(m["memory_usage_gb"] > 0 for m in health["loaded_models"])
    queue = health["queue_status"]
    assert queue["pending_requests"] == 0 and queue["processing_requests"] in (0, 1) and queue["completed_today"] >= 4
    metrics = api.get("/api/v1/metrics").json()
    assert set(metrics) == {"requests", "generation", "queue", "storage", "models"}
    assert metrics["requests"]["total"] >= 10 and metrics["requests"]["today"] >= 10
    assert 0 < metrics["requests"]["success_rate_percent"] < 100  # four failed on purpose
    gen = metrics["generation"]
    assert 0 < gen["fastest_time_seconds"] <= gen["median_time_seconds"] <= gen["slowest_time_seconds"]
    assert gen["average_time_seconds"] > 0
    assert metrics["queue"]["current_length"] == 0 and metrics["queue"]["max_length_today"] >= 3
    assert metrics["storage"]["total_videos"] >= 4 and metrics["storage"]["total_size_gb"] > 0
    assert metrics["storage"]["available_space_gb"] > 0
    assert metrics["models"]["wan-t2v"]["generations"] >= 3 and metrics["models"]["oom"]["success_rate"] == 0


def test_websocket_progress_and_completion(api):
    ws_url = api.url.replace("http://", "ws://") + "/api/v1/ws/generation"

    async def follow() -> tuple[list[dict], str]:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(ws_url)
            assert refused.value.status == 401
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:  # another site's page
                await session.ws_connect(ws_url, headers={**AUTH, "Origin": "https://evil.example"})
            assert refused.value.status == 403
            async with session.ws_connect(ws_url, headers=AUTH) as ws, session.ws_connect(ws_url, headers=AUTH):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:  # [api] max_event_streams = 2
                    await session.ws_connect(ws_url, headers=AUTH)
                assert refused.value.status == 503
                await ws.send_json({"type": "subscribe", "request_id": "video_req_unknown"})
                unknown = await ws.receive_json(timeout=10)
                assert unknown["type"] == "error" and unknown["error"]["code"] == "REQUEST_NOT_FOUND", unknown
                request_id = (await asyncio.to_thread(api.generate, prompt="progress please", num_inference_steps=30))["request_id"]
                await ws.send_json({"type": "subscribe", "request_id": request_id})
                messages = []
                while not messages or messages[-1]["type"] == "progress":
                    messages.append(await ws.receive_json(timeout=60))
                return messages, request_id

    messages, request_id = asyncio.run(follow())
    progress = [m for m in messages if m["type"] == "progress"]
    assert len(progress) >= 3, messages  # several steps reported as they happen
    values = [m["progress"] for m in progress]
    assert values == sorted(values) and len(set(values)) >= 3, values
    assert {m["request_id"] for m in messages} == {request_id}
    assert set(progress[-1]) == {"type", "request_id", "status", "progress", "current_step", "estimated_remaining_seconds"}
    assert "frame_generation" in {m["current_step"] for m in progress}
    done = messages[-1]
    assert done["type"] == "completed", messages
    assert done["result"]["video_url"].endswith(".mp4") and done["result"]["thumbnail_url"].endswith("_thumb.jpg")
