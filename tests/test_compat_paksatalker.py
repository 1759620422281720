"""PaksaTalker's API (seed 002) on a real daemon: the documented usage as real `curl -F`
commands (fusion-video with an image and text, with an image and audio, video-from-prompt),
status polled until completed, the MP4 downloaded and probed with ffprobe; capabilities
that follow the host (a tiny random-weight Wav2Lip copied into the registry turns
`wav2lip2` on, and `preferWav2Lip2` then lip-syncs with it); voices and languages; every
error in the seed's `{success: false, detail}` shape.

The face is scikit-image's public-domain astronaut portrait (a real photo).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from io import BytesIO
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.support import REPO, Daemon, wait_status

sys.path.insert(0, str(REPO / "scripts"))

SAY = "Hello there."
HEIGHTS = {"480p": 480, "720p": 720}
READABLE_STAGES = re.compile(r"^(Queued.*|Synthesizing speech.*|Detecting the face.*|Loading the lip-sync model.*|"
                             r"Lip-syncing frames.*|Rendering frames without lip sync.*|Encoding the video.*|Starting.*|Completed)$")


def curl(*args: str) -> tuple[int, dict]:
    """A real curl command; (HTTP status, JSON body)."""
    out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=60, check=True)
    body, _, code = out.stdout.rpartition("\n")
    return int(code), json.loads(body)


def ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    return {s["codec_type"]: s for s in json.loads(out.stdout)["streams"]}


def real_filters() -> set[str]:
    out = subprocess.run(["ffmpeg", "-hide_banner", "-filters"], capture_output=True, text=True, check=True).stdout
    return {line.split()[1] for line in out.splitlines() if re.match(r"^\s*[T.][S.][C.]\s", line)}


def failure(response: requests.Response, status: int) -> str:
    """The `detail` of a seed-shaped error, checked to be exactly that shape."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"success", "detail"} and body["success"] is False, body
    assert isinstance(body["detail"], str) and body["detail"], body
    return body["detail"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from skimage import data

    folder = tmp_path_factory.mktemp("paksa-inputs")
    Image.fromarray(data.astronaut()).save(folder / "face.png")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=220:duration=1.6", "-ac", "1",
                    str(folder / "voice.wav")], check=True)
    (folder / "notes.txt").write_text("not a picture\n")
    return folder


@pytest.fixture(scope="module")
def paksa(tmp_path_factory, files):
    """A daemon serving PaksaTalker on its own port, with a default face and an empty registry."""
    root = tmp_path_factory.mktemp("paksa")
    registry = root / "registry"
    registry.mkdir()
    d = Daemon(root / "spool", VIDSPOOL_REGISTRY__DIR=str(registry),
               VIDSPOOL_COMPAT__PAKSATALKER__LISTEN="127.0.0.1:0",
               VIDSPOOL_COMPAT__PAKSATALKER__DEFAULT_FACE=str(files / "face.png")).start()
    url = d.heartbeat["compat_urls"]["paksatalker"] + "/api/v1"
    yield d, url, registry
    d.stop()


def submit(url: str, endpoint: str, fields: dict[str, str]) -> str:
    args = [a for name, value in fields.items() for a in ("-F", f"{name}={value}")]
    code, body = curl(*args, f"{url}/generate/{endpoint}")
    assert code == 200, body
    assert body["success"] is True and body["status"] == "processing", body
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", body["task_id"]), body
    return body["task_id"]


def poll(url: str, task_id: str, timeout: float = 600) -> tuple[dict, list[str]]:
    """Polls /status until the task ends; its last data and every stage it showed."""
    deadline, stages = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        r = requests.get(f"{url}/status/{task_id}", timeout=10)
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        if not stages or stages[-1] != data["stage"]:
            stages.append(data["stage"])
        if data["status"] in ("completed", "failed"):
            return data, stages
        time.sleep(0.2)
    raise AssertionError(f"{task_id} did not end: {data}")


@pytest.fixture(scope="module")
def tasks(paksa, files, tmp_path_factory):
    """The documented usage, with capabilities read before and after a lip-sync model is
    copied into the registry; every task polled to its end."""
    d, url, registry = paksa
    before = requests.get(f"{url}/capabilities", timeout=30).json()
    face, voice = files / "face.png", files / "voice.wav"
    ids = {
        # image + text, nothing else: the seed's defaults (720p, 25 fps, full)
        "text": submit(url, "fusion-video", {"image": f"@{face}", "text": SAY}),
        # image + audio, with fields vidspool cannot honour here
        "audio": submit(url, "fusion-video", {
            "image": f"@{face}", "audio": f"@{voice}", "text": "not spoken", "resolution": "480p", "fps": "25", "preprocess": "crop",
            "emotion": "happy", "style": "dramatic", "expressionEngine": "mediapipe", "preferWav2Lip2": "true",
            "backgroundMode": "color", "backgroundColor": "#00ff00", "chromaSimilarity": "0.3"}),
        # the prompt alone: the default face, the default voice
        "prompt": submit(url, "video-from-prompt", {"prompt": SAY}),
    }
    queued = requests.get(f"{url}/status/{ids['prompt']}", timeout=10).json()
    model = tmp_path_factory.mktemp("models") / "wav2lip-tiny"
    subprocess.run([sys.executable, str(REPO / "scripts" / "tiny_wav2lip.py"), str(model)], check=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True)
    os.rename(model, registry / "wav2lip-tiny")  # copied in: found without a reload
    after = requests.get(f"{url}/capabilities", timeout=30).json()
    ids["wav2lip"] = submit(url, "fusion-video", {"image": f"@{face}", "text": SAY, "resolution": "480p",
                                                  "preferWav2Lip2": "true", "preprocess": "extcrop"})
    ids["voice"] = submit(url, "video-from-prompt", {"prompt": SAY, "voice": "en-US-JennyNeural", "resolution": "480p"})
    done = {name: poll(url, task_id) for name, task_id in ids.items()}
    return {"ids": ids, "done": done, "before": before, "after": after, "queued": queued, "daemon": d, "url": url}


@pytest.mark.parametrize("name,resolution", [("text", "720p"), ("audio", "480p"), ("prompt", "720p"), ("wav2lip", "480p")])
def test_documented_usage_makes_a_video(tasks, name, resolution, tmp_path):
    url = tasks["url"]
    data, stages = tasks["done"][name]
    task_id = tasks["ids"][name]
    assert data["status"] == "completed", data
    assert data["progress"] == 100 and data["error"] == "" and data["stage"] == "Completed"
    assert data["video_url"] == f"/api/v1/download/{task_id}.mp4"
    assert all(READABLE_STAGES.match(s) for s in stages), stages
    video = tmp_path / "out.mp4"
    origin = url.removesuffix("/api/v1")
    out = subprocess.run(["curl", "-sS", "-f", "-o", str(video), "-w", "%{content_type}", origin + data["video_url"]],
                         capture_output=True, text=True, check=True)
    assert out.stdout == "video/mp4"
    streams = ffprobe(video)
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac"
    assert int(streams["video"]["height"]) == HEIGHTS[resolution]
    assert int(streams["video"]["width"]) == HEIGHTS[resolution]  # the astronaut is square
    assert streams["video"]["r_frame_rate"] == "25/1"


def test_the_job_is_an_ordinary_vidspool_job(tasks):
    d, ids = tasks["daemon"], tasks["ids"]
    native = {name: requests.get(f"{d.api}/api/v1/jobs/{task_id}", timeout=10).json() for name, task_id in ids.items()}
    assert all(doc["kind"] == "talking-head" and doc["labels"]["compat"] == "paksatalker" for doc in native.values())
    assert native["text"]["job"]["params"]["resolution"] == "720p" and native["text"]["job"]["params"]["crop"] == "full"
    assert native["audio"]["job"]["params"]["crop"] == "face"  # preprocess=crop
    assert native["audio"]["job"]["inputs"]["audio"].startswith("audio") and native["audio"]["job"]["params"]["text"] is None
    assert abs(native["audio"]["result"]["speech"]["duration"] - 1.6) < 0.05  # the uploaded recording
    assert native["prompt"]["job"]["params"]["text"] == SAY
    assert native["wav2lip"]["result"]["lipsync"] == "wav2lip" and native["wav2lip"]["model"] == "wav2lip-tiny"


def test_status_says_which_lipsync_ran(tasks):
    text, _ = tasks["done"]["text"]
    assert text["lipsync"] == "none" and text["lipsync_model"] is None
    assert any(n.startswith("lipsync none: the face is not animated") for n in text["notes"])
    synced, stages = tasks["done"]["wav2lip"]
    assert synced["lipsync"] == "wav2lip" and synced["lipsync_model"] == "wav2lip-tiny" and "notes" not in synced
    assert not any(s.startswith("Rendering frames without lip sync") for s in stages)


def test_ignored_and_adjusted_fields_are_in_the_status(tasks):
    audio, _ = tasks["done"]["audio"]
    assert all(re.fullmatch(r"\S+ \(.+\)", note) for note in audio["ignored"]), audio["ignored"]
    ignored = " | ".join(audio["ignored"])
    for field in ("emotion=happy", "style=dramatic", "expressionEngine=mediapipe", "backgroundMode=color",
                  "backgroundColor=#00ff00", "chromaSimilarity=0.3", "preferWav2Lip2=true (no Wav2Lip model",
                  "text (the uploaded audio is spoken)"):
        assert field in ignored, audio["ignored"]
    assert audio["adjusted"] == []
    text, _ = tasks["done"]["text"]
    assert text["ignored"] == [] and text["adjusted"] == []
    synced, _ = tasks["done"]["wav2lip"]
    assert synced["ignored"] == [] and any(a.startswith("preprocess extcrop→crop") for a in synced["adjusted"])
    voice, _ = tasks["done"]["voice"]
    assert any(a.startswith("voice en-US-JennyNeural→") for a in voice["adjusted"]), voice


def test_a_new_task_reads_as_processing(tasks):
    queued = tasks["queued"]
    assert queued["success"] is True and queued["data"]["status"] == "processing"
    assert queued["data"]["video_url"] == "" and queued["data"]["error"] == ""
    assert READABLE_STAGES.match(queued["data"]["stage"]), queued


def test_status_right_after_the_post_and_a_failed_task(paksa, files):
    """Polled at once, a task is never unknown (its id is reserved before the POST answers);
    a task that fails reads as failed with the reason. A request whose job the daemon's intake
    would refuse is answered 400 with the reason and leaves no task."""
    d, url, _ = paksa
    wall = BytesIO()
    Image.new("RGB", (64, 64), (200, 200, 200)).save(wall, format="PNG")  # no face to find
    session, ids = requests.Session(), []
    for _ in range(12):
        r = session.post(f"{url}/generate/fusion-video", files={"image": ("wall.png", wall.getvalue())}, data={"text": SAY},
                         timeout=10)
        assert r.status_code == 200, r.text
        ids.append(r.json()["task_id"])
        st = session.get(f"{url}/status/{ids[-1]}", timeout=10)
        assert st.status_code == 200 and st.json()["data"]["status"] in ("processing", "failed"), st.text
    for task_id in ids:
        data, _ = poll(url, task_id, timeout=60)
        assert data["status"] == "failed" and data["stage"] == "Failed" and data["video_url"] == ""
        assert "no face" in data["error"], data
        failure(session.get(f"{url}/download/{task_id}.mp4", timeout=10), 404)
    outbox = sorted(os.listdir(d.root / "outbox"))
    face = (files / "face.png").read_bytes()
    detail = failure(session.post(f"{url}/generate/fusion-video", files={"image": ("face.png", face)}, data={"text": "..."},
                                  timeout=10), 400)
    assert "nothing to speak" in detail, detail
    assert sorted(os.listdir(d.root / "outbox")) == outbox


def test_capabilities_follow_the_registry(tasks):
    before, after = tasks["before"], tasks["after"]
    for doc in (before, after):
        assert doc["success"] is True and set(doc["data"]) >= {"models", "ffmpeg"}
        models = doc["data"]["models"]
        assert set(models) >= {"sadtalker", "wav2lip2", "emage", "mediapipe", "threeddfa", "openseeface",
                               "mini_xception", "sadtalker_weights"}
        assert models["sadtalker"] is False and models["emage"] is False and models["sadtalker_weights"] is False
        if importlib.util.find_spec("mediapipe") is None:
            assert models["mediapipe"] is False
    assert before["data"]["models"]["wav2lip2"] is False and before["data"]["vidspool"]["lipsync_models"] == {}
    assert after["data"]["models"]["wav2lip2"] is True
    assert after["data"]["vidspool"]["lipsync_models"] == {"wav2lip-tiny": "wav2lip"}
    # no [kinds.talking-head] model here: the only lip-sync model in the registry
    assert before["data"]["vidspool"]["default_lipsync"] == "none"
    assert after["data"]["vidspool"]["default_lipsync"] == "wav2lip-tiny"


def test_ffmpeg_capabilities_are_the_real_probe(paksa):
    _, url, _ = paksa
    ffmpeg = requests.get(f"{url}/capabilities", timeout=30).json()["data"]["ffmpeg"]
    real = real_filters()
    assert ffmpeg["available"] is True
    assert ffmpeg["filters"] and all(ffmpeg["filters"][n] == (n in real) for n in ffmpeg["filters"])
    assert ffmpeg["filters"]["overlay"] is True and ffmpeg["filters"]["scale"] is True


def test_expression_capabilities_and_estimate(paksa, files):
    _, url, _ = paksa
    caps = requests.get(f"{url}/expressions/capabilities", timeout=10).json()
    assert caps["success"] is True and set(caps["data"]) == {"mediapipe", "threeddfa", "openseeface", "mini_xception"}
    assert caps["engines"] == caps["data"] and not any(caps["data"].values())  # none of them installed here
    assert "image" in failure(requests.post(f"{url}/expressions/estimate", data={"engine": "auto"}, timeout=10), 400)
    with open(files / "face.png", "rb") as f:
        detail = failure(requests.post(f"{url}/expressions/estimate", files={"image": f}, timeout=10), 501)
    assert "mediapipe" in detail and "no expression estimator" in detail
    with open(files / "face.png", "rb") as f:
        assert "engine" in failure(requests.post(f"{url}/expressions/estimate", files={"image": f},
                                                 data={"engine": "dlib"}, timeout=10), 400)
    with open(files / "notes.txt", "rb") as f:
        assert "not a readable image" in failure(requests.post(f"{url}/expressions/estimate", files={"image": f}, timeout=10), 415)


def test_voices_and_languages_sorted_with_flags(paksa):
    d, url, _ = paksa
    voices = requests.get(f"{url}/voices", timeout=10).json()
    assert voices["success"] is True and set(voices) == {"success", "voices"}
    listed = voices["voices"]
    native = requests.get(f"{d.api}/api/v1/voices", timeout=10).json()
    native = native.get("voices", native) if isinstance(native, dict) else native
    assert len(listed) == len(native) > 50
    assert [v["name"].casefold() for v in listed] == sorted(v["name"].casefold() for v in listed)
    for v in listed:
        assert set(v) == {"voice_id", "language", "language_code", "flag", "name", "gender"}
        assert v["gender"] in ("Male", "Female", "Unknown") and v["flag"]
    by_id = {v["voice_id"]: v for v in listed}
    assert by_id["en-us"]["flag"] == "\U0001F1FA\U0001F1F8" and by_id["en-us"]["language"] == "English (America)"
    assert by_id["de"]["flag"] == "\U0001F1E9\U0001F1EA" and by_id["de"]["language_code"] == "de"
    languages = requests.get(f"{url}/languages", timeout=10).json()
    assert languages["success"] is True and set(languages) == {"success", "languages"}
    langs = languages["languages"]
    assert [lang["name"].casefold() for lang in langs] == sorted(lang["name"].casefold() for lang in langs)
    assert sum(lang["voice_count"] for lang in langs) == len(listed)
    by_code = {lang["code"]: lang for lang in langs}
    assert by_code["de"] == {"code": "de", "name": "German", "flag": "\U0001F1E9\U0001F1EA", "voice_count": 1}
    assert by_code["pt-br"]["flag"] == "\U0001F1E7\U0001F1F7" and by_code["es-419"]["flag"] == "\U0001F310"


def test_generation_errors(paksa, files):
    _, url, _ = paksa
    fusion, prompt = f"{url}/generate/fusion-video", f"{url}/generate/video-from-prompt"
    face = (files / "face.png").read_bytes()
    assert "image is required" in failure(requests.post(fusion, data={"resolution": "480p"}, timeout=10), 400)
    assert "audio" in failure(requests.post(fusion, files={"image": ("face.png", face)}, timeout=10), 400)
    for field, value in (("resolution", "4k"), ("fps", "abc"), ("fps", "0"), ("fps", "120"), ("fps", "29.97"),
                         ("preprocess", "warp"), ("expressionEngine", "dlib")):
        detail = failure(requests.post(fusion, files={"image": ("face.png", face)}, data={"text": SAY, field: value},
                                       timeout=10), 400)
        assert field in detail, detail
    assert "not a readable image" in failure(requests.post(fusion, files={"image": ("notes.txt", b"plain text")},
                                                   data={"text": SAY}, timeout=10), 415)
    assert "prompt is required" in failure(requests.post(prompt, data={"voice": "en-us"}, timeout=10), 400)
    detail = failure(requests.post(prompt, data={"prompt": SAY, "voice": "xx-Nobody"}, timeout=10), 400)
    assert "xx-Nobody" in detail and "/api/v1/voices" in detail
    assert "fps" in failure(requests.post(prompt, data={"prompt": SAY, "fps": "-3"}, timeout=10), 400)


def test_status_and_download_errors(tasks):
    url, task_id = tasks["url"], tasks["ids"]["text"]
    origin = url.removesuffix("/api/v1")
    assert failure(requests.get(f"{url}/status/no-such-task", timeout=10), 404) == "Task not found"
    assert failure(requests.get(f"{url}/status/..%2F..%2Fetc", timeout=10), 404)
    for name in ("no-such-task.mp4", f"{task_id}.txt", f"{task_id}", "..%2F..%2Fetc%2Fpasswd",
                 "%2Fetc%2Fpasswd", f"..%2F{task_id}.mp4", "status.json"):
        failure(requests.get(f"{url}/download/{name}", timeout=10), 404)
    for path in ("/api/v1/download/../../../etc/passwd", f"/api/v1/download/../status/{task_id}.mp4"):
        out = subprocess.run(["curl", "-sS", "--path-as-is", "-w", "\n%{http_code}", origin + path],
                             capture_output=True, text=True, check=True).stdout
        body, _, code = out.rpartition("\n")
        assert code == "404" and json.loads(body)["success"] is False, out
    failure(requests.get(f"{url}/no-such-endpoint", timeout=10), 404)
    failure(requests.delete(f"{url}/status/{task_id}", timeout=10), 405)


@pytest.fixture(scope="module")
def other(paksa, tasks):
    """A second daemon on the same spool, its personality without a configured default face."""
    d, _, registry = paksa
    o = Daemon(d.root, host="other-host", VIDSPOOL_REGISTRY__DIR=str(registry),
               VIDSPOOL_COMPAT__PAKSATALKER__LISTEN="127.0.0.1:0").start()
    yield o, o.heartbeat["compat_urls"]["paksatalker"] + "/api/v1"
    o.stop()


def test_another_daemon_on_the_spool_answers(tasks, other, tmp_path):
    _, url = other
    for name in ("text", "wav2lip"):
        data = requests.get(f"{url}/status/{tasks['ids'][name]}", timeout=10).json()["data"]
        assert data == tasks["done"][name][0]
    r = requests.get(url.removesuffix("/api/v1") + tasks["done"]["wav2lip"][0]["video_url"], timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == "video/mp4"
    (tmp_path / "v.mp4").write_bytes(r.content)
    assert int(ffprobe(tmp_path / "v.mp4")["video"]["height"]) == 480


def test_without_a_configured_face_the_packaged_one(other, files):
    """No default_face: a request without an image shows scikit-image's astronaut, the face
    the project ships (as its document makes a default avatar)."""
    from daemon.http.compat.faces import packaged_face

    o, url = other
    assert requests.get(f"{url}/capabilities", timeout=30).json()["data"]["vidspool"]["default_face"] is True
    for path, field in (("fusion-video", "text"), ("video-from-prompt", "prompt")):
        r = requests.post(f"{url}/generate/{path}", data={field: SAY}, timeout=10)
        assert r.status_code == 200, r.text
        task_id = r.json()["task_id"]
        job = wait_status(o.root, task_id, states={"queued", "running", "completed", "failed"}, daemon=o)["job"]
        assert job["inputs"]["face"] == "face.png", job
        requests.delete(f"{o.api}/api/v1/jobs/{task_id}", timeout=10)  # its run is tested with a configured face
        kept = wait_status(o.root, task_id, daemon=o)  # an ended job's inputs are kept in its outbox folder
        assert (o.root / "outbox" / task_id / "input" / "face.png").read_bytes() == packaged_face().read_bytes(), kept
