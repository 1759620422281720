"""The HeyGem personality (seed 000) through real daemons, real curl and ffprobe.

Two daemons: `cloning` has a coqui voice whose model clones (a tiny random-weight YourTTS
layout, scripts/tiny_tts_models.py), a Wav2Lip lip-sync model as the kind's default (a tiny
random-weight one, scripts/tiny_wav2lip.py) and a default face; `plain` has none of these,
so its jobs run `lipsync: none` in the default espeak-ng voice, and say so. The face is
scikit-image's public-domain astronaut portrait; `my_video.mp4` is that face with a tone.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from PIL import Image

from tests.support import REPO, Daemon

SEED_BASE = "http://localhost:5003"
# The usage examples of the seed's document, as written.
CURL_GENERATE = """curl -X POST http://localhost:5003/api/generate \\
  -F "text=Hello, this is a test message" \\
  -F "video=@my_video.mp4\""""
CURL_STATUS = "curl http://localhost:5003/api/status/task_1234567890"
CURL_DOWNLOAD = "curl -O http://localhost:5003/api/download/task_1234567890"
TASK_ID = re.compile(r"task_\d+")
ERROR_KEYS = {"success", "error"}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def streams(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    return {s["codec_type"]: s for s in doc["streams"]} | {"format": doc["format"]}


def curl(line: str, url: str, cwd: Path, task_id: str | None = None) -> subprocess.CompletedProcess:
    """A line of the document run by the shell as written: only the base URL (and the
    example task id) changed."""
    line = line.replace(SEED_BASE, url)
    if task_id:
        line = line.replace("task_1234567890", task_id)
    return subprocess.run(line, shell=True, cwd=cwd, capture_output=True, text=True, timeout=60, check=True)


def poll(url: str, task_id: str, timeout: float = 240) -> list[dict]:
    """Every status seen until the task ends."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = requests.get(f"{url}/api/status/{task_id}", timeout=10)
        assert r.status_code == 200, r.text
        seen.append(r.json())
        if seen[-1]["status"] in ("completed", "failed"):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"{task_id} not done in {timeout}s: {seen[-1]}")


def assert_error(r: requests.Response, status: int, *words: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == ERROR_KEYS and body["success"] is False and isinstance(body["error"], str), body
    for word in words:
        assert word in body["error"], (word, body)
    return body["error"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The tiny coqui and Wav2Lip folders, built in child processes (no torch in this one)."""
    root = tmp_path_factory.mktemp("heygem-models")
    builds = [subprocess.Popen([sys.executable, str(REPO / "scripts" / "tiny_tts_models.py"), str(root / "tts")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
              subprocess.Popen([sys.executable, str(REPO / "scripts" / "tiny_wav2lip.py"), str(root / "registry" / "wav2lip-tiny")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)]
    for b in builds:
        _, err = b.communicate(timeout=300)
        assert b.returncode == 0, err.decode()
    return {"yourtts": root / "tts" / "yourtts", "registry": root / "registry"}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    from skimage import data

    folder = tmp_path_factory.mktemp("heygem-media")
    Image.fromarray(np.ascontiguousarray(data.astronaut()[20:340, 100:420])).resize((192, 192)).save(folder / "face.png")
    # my_video.mp4: the face with a tone (its voice, for cloning); silent.mov: no audio track.
    ffmpeg("-loop", "1", "-framerate", "10", "-i", str(folder / "face.png"), "-f", "lavfi", "-i", "sine=frequency=220:duration=1.2",
           "-t", "1.2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(folder / "my_video.mp4"))
    ffmpeg("-loop", "1", "-framerate", "10", "-i", str(folder / "face.png"), "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           str(folder / "silent.mov"))
    (folder / "clip.webm").write_bytes((folder / "my_video.mp4").read_bytes())
    (folder / "secret.txt").write_text("not for the web")
    return folder


def heygem_daemon(root: Path, **settings: str) -> tuple[Daemon, str]:
    d = Daemon(root, VIDSPOOL_COMPAT__HEYGEM__LISTEN="127.0.0.1:0", **settings).start()
    return d, d.heartbeat["compat_urls"]["heygem"]


@pytest.fixture(scope="module")
def cloning(tmp_path_factory, models, media):
    voices = {"cloner": {"engine": "coqui", "model": str(models["yourtts"])}}
    d, url = heygem_daemon(tmp_path_factory.mktemp("heygem-cloning") / "spool",
                           VIDSPOOL_REGISTRY__DIR=str(models["registry"]), VIDSPOOL_VOICES=json.dumps(voices),
                           VIDSPOOL_KINDS=json.dumps({"talking-head": {"model": "wav2lip-tiny"}}),
                           VIDSPOOL_COMPAT__HEYGEM__VOICE="cloner",
                           VIDSPOOL_COMPAT__HEYGEM__DEFAULT_FACE=str(media / "face.png"))
    yield d, url
    d.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    d, url = heygem_daemon(tmp_path_factory.mktemp("heygem-plain") / "spool")
    yield d, url
    d.stop()


@pytest.fixture(scope="module")
def documented(cloning, media, tmp_path_factory):
    """The document's three curl lines, as written, against the cloning daemon; and what
    the API said about the task before it completed."""
    d, url = cloning
    answer = json.loads(curl(CURL_GENERATE, url, cwd=media).stdout)
    task_id = answer["task_id"]
    early = {"download": requests.get(f"{url}/api/download/{task_id}", timeout=10),
             "output": requests.get(f"{url}/outputs/final_{task_id}.mp4", timeout=10)}
    seen, queues = [], []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        seen.append(json.loads(curl(CURL_STATUS, url, cwd=media, task_id=task_id).stdout))
        queues.append(requests.get(f"{url}/api/queue", timeout=10).json())
        if seen[-1]["status"] in ("completed", "failed"):
            break
        time.sleep(0.1)
    downloads = tmp_path_factory.mktemp("heygem-downloads")
    curl(CURL_DOWNLOAD, url, cwd=downloads, task_id=task_id)
    return {"answer": answer, "early": early, "seen": seen, "queues": queues, "file": downloads / task_id,
            "url": url, "daemon": d}


def test_the_documented_curl_lines_make_a_cloned_lip_synced_video(documented):
    answer = documented["answer"]
    assert set(answer) == {"success", "task_id", "message", "status_url"}
    assert answer["success"] is True and answer["message"] == "Task submitted successfully"
    assert TASK_ID.fullmatch(answer["task_id"]) and answer["status_url"] == f"/api/status/{answer['task_id']}"

    final = documented["seen"][-1]
    assert final["status"] == "completed", (final, documented["daemon"].log())
    assert final["progress"] == 100 and final["error"] is None and final["gpu_id"] is None  # a CPU worker
    result = final["result"]
    assert result["video_url"] == f"/outputs/final_{answer['task_id']}.mp4"
    assert result["download_url"] == f"/api/download/{answer['task_id']}"
    assert result["lipsync"] == "wav2lip" and final["lipsync"] == "wav2lip-tiny"  # the kind's default model
    # HeyGem's voice cloning: the video's own sound was the reference for the coqui voice.
    assert final["voice_cloning"] is True and result["speech"]["voice"] == "cloned"
    assert not [n for n in final["ignored"] if "cloning" in n or "lip-sync" in n], final["ignored"]

    path = documented["file"]  # curl -O names it after the URL
    probed = streams(path)
    assert probed["video"]["codec_name"] == "h264" and probed["audio"]["codec_name"] == "aac"
    assert result["size"] == path.stat().st_size
    assert abs(float(probed["format"]["duration"]) - result["duration"]) < 0.15
    assert (int(probed["video"]["width"]), int(probed["video"]["height"])) == (192, 192)  # the video's own size

    # /outputs/final_<id>.mp4 is the same file.
    r = requests.get(documented["url"] + result["video_url"], timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"] == "video/mp4" and r.content == path.read_bytes()


def test_status_while_running_is_translated(documented):
    seen = documented["seen"]
    states = [s["status"] for s in seen]
    assert set(states) <= {"queued", "processing", "completed"}, states
    order = {"queued": 0, "processing": 1, "completed": 2}
    assert [order[s] for s in states] == sorted(order[s] for s in states)
    assert "processing" in states, "polled every 0.1 s, a run of seconds is seen running"
    assert all(s["gpu_id"] is None for s in seen)  # a CPU worker
    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress) and all(0 <= p <= 100 for p in progress), progress
    for s in seen:
        assert {"status", "progress", "gpu_id", "error", "result"} <= set(s)
        assert s["result"] is None if s["status"] != "completed" else s["result"] is not None


def test_before_completion_download_and_output_say_so(documented):
    early = documented["early"]
    assert_error(early["download"], 400, "not completed")
    assert_error(early["output"], 404, "not completed")


def test_the_queue_shows_the_worker_busy_with_the_task(documented):
    task_id = documented["answer"]["task_id"]
    for q in documented["queues"]:
        assert set(q) == {"gpus", "queue", "queue_size"} and q["queue_size"] == len(q["queue"])
        assert set(q["gpus"]) == {"0"}
        gpu = q["gpus"]["0"]
        assert {"busy", "current_task", "memory_used", "video_port", "tts_port"} <= set(gpu)
        assert gpu["video_port"] is None and gpu["tts_port"] is None
        assert re.fullmatch(r"\d+ MiB", gpu["memory_used"]), gpu
        assert gpu["busy"] == (gpu["current_task"] is not None)
    assert any(q["gpus"]["0"]["busy"] and q["gpus"]["0"]["current_task"] == task_id for q in documented["queues"])


def test_text_only_uses_the_default_face(cloning):
    d, url = cloning
    # url-encoded this time (a form without a file)
    r = requests.post(f"{url}/api/generate", data={"text": "Hi there."}, timeout=30)
    assert r.status_code == 200, r.text
    final = poll(url, r.json()["task_id"])[-1]
    assert final["status"] == "completed", final
    assert final["voice_cloning"] is False
    assert any("no video was uploaded" in n for n in final["ignored"]), final["ignored"]
    assert final["result"]["width"] == 192  # the default face's size
    video = requests.get(url + final["result"]["download_url"], timeout=10)
    assert video.status_code == 200 and video.headers["Content-Disposition"].endswith(f'final_{r.json()["task_id"]}.mp4"')


def test_without_a_cloning_voice_or_a_lip_sync_model_the_status_says_so(plain, media):
    d, url = plain
    with open(media / "silent.mov", "rb") as f:
        r = requests.post(f"{url}/api/generate", data={"text": "Hello there.", "speaker": "x"},
                          files={"video": ("silent.mov", f, "video/quicktime")}, timeout=30)
    assert r.status_code == 200, r.text
    final = poll(url, r.json()["task_id"])[-1]
    assert final["status"] == "completed", (final, d.log())
    assert final["lipsync"] == "none" and final["result"]["lipsync"] == "none"
    ignored = final["result"]["ignored"]
    assert any(n.startswith("lip-sync:") and "lipsync: none" in n for n in ignored), ignored
    assert any(n.startswith("voice cloning:") and "no [compat.heygem] voice" in n
               and n.endswith(" (spoken with the default voice)") for n in ignored), ignored
    assert not [n for n in ignored if n.startswith("spoken")], ignored  # one note, not two
    assert any("'speaker'" in n for n in ignored), ignored
    assert final["voice_cloning"] is False and final["result"]["speech"]["engine"] == "espeak"


def test_a_cloning_voice_and_a_video_without_sound(cloning, media):
    d, url = cloning
    with open(media / "silent.mov", "rb") as f:
        r = requests.post(f"{url}/api/generate", data={"text": "Hi."}, files={"video": ("silent.mov", f)}, timeout=30)
    assert r.status_code == 200, r.text
    status = requests.get(f"{url}/api/status/{r.json()['task_id']}", timeout=10).json()
    assert status["voice_cloning"] is False
    assert any("no audio track" in n and n.endswith(" (spoken with voice 'cloner')") for n in status["ignored"]), status


def test_errors(plain, media):
    d, url = plain
    before = sorted((d.root / "outbox").iterdir())
    # text is required: multipart with only a video, an empty url-encoded form, blank text
    with open(media / "my_video.mp4", "rb") as f:
        assert_error(requests.post(f"{url}/api/generate", files={"video": ("my_video.mp4", f)}, timeout=10), 400, "text")
    assert_error(requests.post(f"{url}/api/generate", data={"text": "  "}, timeout=10), 400, "text is required")
    assert_error(requests.post(f"{url}/api/generate", data={}, timeout=10), 400, "text is required")
    # a video that is not mp4, avi, mov or mkv
    with open(media / "clip.webm", "rb") as f:
        error = assert_error(requests.post(f"{url}/api/generate", data={"text": "Hi"}, files={"video": ("clip.webm", f)},
                                           timeout=10), 400, "mp4, avi, mov, mkv")
    assert "webm" in error
    # text the talking-head kind refuses (over its 100,000 characters): refused before it is a job
    assert_error(requests.post(f"{url}/api/generate", data={"text": "a" * 100_001}, timeout=10), 400, "params.text")
    # unknown tasks
    for path in ("/api/status/task_999", "/api/download/task_999", "/outputs/final_task_999.mp4", "/outputs/other.mp4"):
        assert_error(requests.get(url + path, timeout=10), 404)
    # none of these made a job
    assert sorted((d.root / "outbox").iterdir()) == before, "refused requests must not become jobs"


def test_path_traversal_never_reaches_a_file(plain, media):
    d, url = plain
    host = urlsplit(url)
    attempts = ["/outputs/../../../../etc/passwd", "/outputs/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
                "/outputs/final_..%2F..%2Fhosts%2Ftest-host.json.mp4", "/outputs/final_..mp4", "/outputs/%2e%2e",
                "/api/download/..%2F..%2Fhosts%2Ftest-host.json", "/api/download/%2e%2e", "/api/download/..",
                f"/outputs/{media}/secret.txt", f"/api/download/{str(media / 'secret.txt').replace('/', '%2F')}",
                "/static/..%2Fcompat%2Fheygem.py", "/static/heygem.html"]
    for path in attempts:
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
        conn.request("GET", path)  # sent as is: no client-side normalizing
        r = conn.getresponse()
        body = r.read()
        conn.close()
        assert r.status == 404, (path, r.status, body[:200])
        assert json.loads(body)["success"] is False, path
        assert b"root:" not in body and b"not for the web" not in body and b"heartbeat" not in body, path


def test_queue_info_and_health_shapes(plain):
    d, url = plain
    q = requests.get(f"{url}/api/queue", timeout=10).json()
    assert set(q) == {"gpus", "queue", "queue_size"}
    assert q["gpus"]["0"]["memory_used"].endswith(" MiB") and q["gpus"]["0"]["device"] == "cpu:0"
    info = requests.get(f"{url}/api/info", timeout=10).json()
    assert {"service", "version", "port", "gpus", "endpoints"} <= set(info)
    assert info["port"] == urlsplit(url).port and isinstance(info["service"], str) and info["version"]
    assert info["gpus"] == {"0": {"video_port": None, "tts_port": None, "device": "cpu:0"}}
    assert "POST /api/generate" in info["endpoints"] and "GET /api/status/<task_id>" in info["endpoints"]
    r = requests.get(f"{url}/api/health", timeout=10)
    health = r.json()
    assert r.status_code == 200 and health["status"] == "healthy" and set(health) == {"status", "service", "timestamp"}
    assert health["service"] == info["service"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", health["timestamp"])


def test_the_page_and_its_script(plain):
    d, url = plain
    page = requests.get(url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="/static/heygem.js"' in attrs and not body.strip() for attrs, body in scripts)
    assert 'name="text"' in html and 'type="file"' in html and 'name="video"' in html
    js = requests.get(url + "/static/heygem.js", timeout=10)
    assert js.status_code == 200 and "javascript" in js.headers["Content-Type"]
    assert "/api/generate" in js.text and "/api/status/" in js.text and "FormData" in js.text
    # The page posts a browser's form from its own origin: the guard lets it through.
    r = requests.post(f"{url}/api/generate", files={"text": (None, " ")}, headers={"Origin": url}, timeout=10)
    assert_error(r, 400, "text is required")  # past the Origin check; refused only for the blank text
    r = requests.post(f"{url}/api/generate", files={"text": (None, "Hi")}, headers={"Origin": "http://evil.example"}, timeout=10)
    assert_error(r, 403)

