"""talking-head through a real daemon: each backend (wav2lip, musetalk, none) with a photo
and text and with a video and a recording, on tiny random-weight checkpoints in the
published layouts (scripts/tiny_wav2lip.py, scripts/tiny_musetalk.py) found in the
registry folder and loaded by the worker; errors; the warm model loads once.

The face is scikit-image's public-domain astronaut portrait (a real photo).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from io import BytesIO
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tests.support import REPO, Daemon, drop_folder, wait_all_final

sys.path.insert(0, str(REPO / "scripts"))
import tiny_musetalk  # noqa: E402
import tiny_wav2lip  # noqa: E402

from pipeline.faces.blend import face_region  # noqa: E402
from pipeline.kinds.talking_head import REGION  # noqa: E402
from contract.messages import Progress

FPS = 25
VIDEO_FPS = 10
SAY = "Hello there, nice to meet you."
MARGIN = 6  # pixels around the redrawn region that H.264's blocks may smear into


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def png(array: np.ndarray) -> bytes:
    buf = BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def face_video(path: Path, frames: int = 16) -> np.ndarray:
    """A 320×320 video of the astronaut's head drifting right and back; returns its frames."""
    photo = astronaut()
    out = []
    for i in range(frames):
        dx = 3 * min(i, frames - i)
        out.append(np.ascontiguousarray(photo[20:340, 100 + dx:420 + dx]))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=VIDEO_FPS)
        stream.width, stream.height, stream.pix_fmt = 320, 320, "yuv420p"
        stream.options = {"crf": "12"}
        for frame in out:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return np.stack(out)


def tone_wav(path: Path, seconds: float) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency=220:duration={seconds}", "-ac", "1", str(path)], check=True)


def ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    return {s["codec_type"]: s for s in json.loads(out.stdout)["streams"]}


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def api(d: Daemon, path: str) -> dict:
    with urllib.request.urlopen(d.api + "/api/v1" + path, timeout=10) as r:
        return json.loads(r.read())


def model_loads(d: Daemon) -> int:
    return sum(w["model_loads"] for w in api(d, "/queue")["devices"])


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    folder = tmp_path_factory.mktemp("registry")
    tiny_wav2lip.build(folder / "wav2lip-tiny")
    tiny_musetalk.build(folder / "musetalk-tiny")
    return folder


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    face_video(folder / "face.mp4")
    tone_wav(folder / "voice.wav", 1.6)
    return folder


@pytest.fixture(scope="module")
def heads(tmp_path_factory, registry, scratch):
    video_frames = decoded(scratch / "face.mp4")
    models = {"gone": {"path": str(scratch / "not-here"), "kinds": ["talking-head"]}}
    d = Daemon(tmp_path_factory.mktemp("talking") / "spool", workers=["cpu"],
               VIDSPOOL_REGISTRY__DIR=str(registry), VIDSPOOL_MODELS=json.dumps(models)).start()
    files = {"face.png": png(astronaut()), "face.mp4": (scratch / "face.mp4").read_bytes(),
             "voice.wav": (scratch / "voice.wav").read_bytes()}
    inbox = d.root / "inbox"
    jobs = {}
    for lipsync in ("wav2lip-tiny", "musetalk-tiny", "none"):
        short = lipsync.split("-")[0]
        jobs[f"{short}-photo"] = ({"kind": "talking-head", "inputs": {"face": "face.png"},
                                   "params": {"text": SAY, "lipsync": lipsync, "fps": FPS}}, ["face.png"])
        jobs[f"{short}-video"] = ({"kind": "talking-head", "inputs": {"face": "face.mp4", "audio": "voice.wav"},
                                   "params": {"lipsync": lipsync, "width": 160, "height": 160}}, ["face.mp4", "voice.wav"])
    jobs["crop"] = ({"kind": "talking-head", "inputs": {"face": "face.png"},
                     "params": {"text": "Hi.", "lipsync": "wav2lip-tiny", "crop": "face", "resolution": "480p"}}, ["face.png"])
    example = REPO / "examples" / "talking-head"
    files["astronaut.jpg"] = (example / "astronaut.jpg").read_bytes()
    jobs["example"] = (json.loads((example / "job.json").read_text()), ["astronaut.jpg"])
    for name, (doc, names) in jobs.items():
        drop_folder(inbox, name, doc, {n: files[n] for n in names})
    done = wait_all_final(d.root, list(jobs), timeout=600, daemon=d)
    yield d, done, video_frames
    d.stop()


@pytest.mark.parametrize("backend", ["wav2lip", "musetalk", "none"])
def test_photo_and_text(heads, backend):
    d, done, _ = heads
    st = done[f"{backend}-photo"]
    assert st["state"] == "completed", st.get("error")
    result = st["result"]
    assert result["lipsync"] == backend
    assert st["job"]["params"]["lipsync"] == ("none" if backend == "none" else f"{backend}-tiny")
    video = d.root / "outbox" / f"{backend}-photo" / "video.mp4"
    streams = ffprobe(video)
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac"
    assert (int(streams["video"]["width"]), int(streams["video"]["height"])) == (512, 512)  # the photo's size
    assert streams["video"]["r_frame_rate"] == f"{FPS}/1"
    speech = result["speech"]["duration"]
    assert abs(float(streams["video"]["duration"]) - speech) <= 1 / FPS + 1e-3
    assert abs(float(streams["audio"]["duration"]) - speech) <= 1 / FPS + 0.03  # AAC frames of 1024 samples
    for name in ("thumb.jpg", "speech.wav"):
        assert (d.root / "outbox" / f"{backend}-photo" / name).stat().st_size > 0

    # Outside the redrawn face region every frame is the photo; inside, a model changed it.
    frames = decoded(video).astype(np.int16)
    photo = astronaut().astype(np.int16)
    outside = np.ones(photo.shape[:2], bool)
    if backend != "none":
        x0, y0, x1, y1 = face_region(result["face"]["box"], 512, 512, *REGION[backend])
        outside[max(0, y0 - MARGIN):y1 + MARGIN, max(0, x0 - MARGIN):x1 + MARGIN] = False
    middle = frames[len(frames) // 2]
    assert np.abs(middle - photo)[outside].mean() < 3.0
    if backend != "none":
        inside = np.abs(middle - photo)[y0 + (y1 - y0) * 2 // 3:y1, x0 + (x1 - x0) // 4:x1 - (x1 - x0) // 4]
        assert inside.mean() > 6.0, "random weights redraw the mouth: it differs from the photo"


@pytest.mark.parametrize("backend", ["wav2lip", "musetalk", "none"])
def test_video_and_recording(heads, backend):
    d, done, source = heads
    st = done[f"{backend}-video"]
    assert st["state"] == "completed", st.get("error")
    result = st["result"]
    video = d.root / "outbox" / f"{backend}-video" / "video.mp4"
    streams = ffprobe(video)
    assert (int(streams["video"]["width"]), int(streams["video"]["height"])) == (160, 160)
    assert streams["video"]["r_frame_rate"] == f"{VIDEO_FPS}/1", "a face video keeps its rate by default"
    assert abs(float(streams["video"]["duration"]) - 1.6) <= 1 / VIDEO_FPS + 1e-3
    assert result["face"]["source"] == "video" and result["face"]["source_frames"] == len(source)
    frames = decoded(video)
    assert len(frames) == 16  # 1.6 s at 10 fps: the 16-frame video once
    # The video plays: the head moves between the first frame and the middle one.
    assert np.abs(frames[0].astype(np.int16) - frames[8].astype(np.int16)).mean() > 3


def test_the_example_runs(heads):
    d, done, _ = heads
    st = done["example"]
    assert st["state"] == "completed", st.get("error")
    assert st["result"]["lipsync"] == "none" and st["result"]["video"]["width"] == 512
    assert st["result"]["speech"]["duration"] > 2


def test_face_crop_frames_the_head_at_the_preset_size(heads):
    d, done, _ = heads
    st = done["crop"]
    assert st["state"] == "completed", st.get("error")
    video = st["result"]["video"]
    assert (video["width"], video["height"]) == (480, 480)  # the 480p short side, square by default
    x0, y0, x1, y1 = st["result"]["face"]["view"]
    bx, by, bw, bh = st["result"]["face"]["box"]
    assert x0 <= bx and y0 <= by and bx + bw <= x1 and by + bh <= y1, "the view holds the face"
    assert (x1 - x0) < 512 and (x1 - x0) == (y1 - y0), "a square view smaller than the photo"
    frame = decoded(d.root / "outbox" / "crop" / "video.mp4")[0].astype(np.int16)
    photo = astronaut()[y0:y1, x0:x1]
    expected = np.asarray(Image.fromarray(photo).resize((480, 480), Image.Resampling.BILINEAR), np.int16)
    assert np.abs(frame - expected)[:120].mean() < 8, "the top of the view is the photo's, scaled"


def test_stages_and_progress_of_a_lip_synced_video(registry, scratch, tmp_path):
    """face_detection, loading_model, lipsync (frame counts) and encoding, in order,
    with progress that never goes back; the job's worker-side run on its own."""
    from threading import Event

    from pipeline.context import JobContext
    from pipeline.kinds.talking_head import KIND
    from pipeline.models.resident import ModelStore

    sent: list[dict] = []
    inputs = {"face": [scratch / "face.mp4"], "audio": [scratch / "voice.wav"]}
    ctx = JobContext("unit", {"kind": "talking-head"}, inputs, tmp_path, "cpu", sent.append, Event(),
                     models=ModelStore("cpu"), model_name="w", model_config={"path": str(registry / "wav2lip-tiny")})
    KIND.run(ctx, KIND.params(lipsync="w", width=96, height=96, fps=20))
    progress = [vars(m) for m in sent if isinstance(m, Progress)]
    order = []
    for m in progress:
        if not order or order[-1] != m["stage"]:
            order.append(m["stage"])
    # The recording is uploaded: no speech is synthesized, so no stage says so (PaksaTalker
    # showed "Synthesizing speech: reading the face").
    assert order == ["face_detection", "loading_model", "lipsync", "encoding"], order
    assert [m["progress"] for m in progress] == sorted(m["progress"] for m in progress)
    steps = [(m["step"], m["total_steps"]) for m in progress if m["stage"] == "lipsync"]
    assert steps[0] == (0, 32) and steps[-1] == (32, 32)  # 1.6 s at 20 fps
    assert ctx.outputs == ["video.mp4", "speech.wav", "thumb.jpg"]
    assert ctx.meta["model"]["loaded"] is True and ctx.meta["lipsync"] == "wav2lip"


def test_errors_name_the_problem_and_the_worker_goes_on(heads, tmp_path):
    d, _, _ = heads
    blank = np.full((240, 320, 3), 200, np.uint8)
    blank[:, :160] = 90
    ok_face = png(astronaut())
    jobs = {
        "noface": ({"inputs": {"face": "wall.png"}, "params": {"text": "Hi.", "lipsync": "none"}},
                   {"wall.png": png(blank)}, "unsupported_input", ["no face", "frame 0"]),
        "corrupt": ({"inputs": {"face": "face.png"}, "params": {"text": "Hi.", "lipsync": "none"}},
                    {"face.png": b"\x89PNG\r\n\x1a\n this is not the rest of a png"}, "unsupported_input", ["face.png"]),
        "notaudio": ({"inputs": {"face": "face.png", "audio": "voice.wav"}, "params": {"lipsync": "none"}},
                     {"face.png": ok_face, "voice.wav": b"RIFF but not really a wave file" * 20},
                     "unsupported_input", ["voice.wav"]),
        "gone": ({"inputs": {"face": "face.png"}, "params": {"text": "Hi.", "lipsync": "gone"}},
                 {"face.png": ok_face}, "model_not_found", ["not-here"]),
        "unknown": ({"inputs": {"face": "face.png"}, "params": {"text": "Hi.", "lipsync": "sadtalker"}},
                    {"face.png": ok_face}, "model_not_found", ["sadtalker", "wav2lip-tiny"]),
        "nochoice": ({"inputs": {"face": "face.png"}, "params": {"text": "Hi."}},
                     {"face.png": ok_face}, "model_not_found", ["lipsync", "none"]),
        "background": ({"inputs": {"face": "face.png"}, "params": {"text": "Hi.", "lipsync": "none", "background": "color"}},
                       {"face.png": ok_face}, "unsupported_input", ["segmentation"]),
        "nospeech": ({"inputs": {"face": "face.png"}, "params": {"lipsync": "none"}},
                     {"face.png": ok_face}, "invalid_job", ["params.text", "inputs.audio"]),
    }
    for name, (doc, files, _, _) in jobs.items():
        drop_folder(d.root / "inbox", name, {"kind": "talking-head", **doc}, files)
    done = wait_all_final(d.root, list(jobs), timeout=120, daemon=d)
    for name, (_, _, code, words) in jobs.items():
        error = done[name]["error"]
        assert done[name]["state"] == "failed" and error["code"] == code, (name, error)
        for word in words:
            assert word in error["message"], (name, word, error["message"])
        assert (d.root / "outbox" / name / "input").is_dir(), "the user's files are kept"
    after = wait_all_final(d.root, [drop_job(d, "after", ok_face)], timeout=120, daemon=d)
    assert after["after"]["state"] == "completed", after["after"].get("error")


def drop_job(d: Daemon, name: str, face: bytes, lipsync: str = "none") -> str:
    drop_folder(d.root / "inbox", name, {"kind": "talking-head", "inputs": {"face": "face.png"},
                                         "params": {"text": "Once more.", "lipsync": lipsync, "width": 128, "height": 128}},
                {"face.png": face})
    return name


def test_the_second_job_with_a_backend_loads_nothing(heads):
    d, done, _ = heads
    loads = model_loads(d)
    assert loads >= 2  # wav2lip and musetalk, once each, on the one worker
    again = wait_all_final(d.root, [drop_job(d, "w2l-again", png(astronaut()), "wav2lip-tiny")], timeout=120, daemon=d)
    st = again["w2l-again"]
    assert st["state"] == "completed", st.get("error")
    assert st["result"]["model"]["loaded"] is False
    assert model_loads(d) == loads
    models = {m["name"]: m for m in api(d, "/models")["models"]}
    assert models["wav2lip-tiny"]["backend"] == "wav2lip" and models["musetalk-tiny"]["backend"] == "musetalk"
    assert models["wav2lip-tiny"]["kinds"] == ["talking-head"]


def test_models_import_takes_a_lip_sync_folder(registry, tmp_path):
    env = {"VIDSPOOL_REGISTRY__DIR": str(tmp_path / "models"), "VIDSPOOL_API__PORT": "1", "HF_HUB_OFFLINE": "1",
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "daemon", "models", "import", str(registry / "musetalk-tiny"),
                          "--name", "lips"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "(MuseTalk)" in out.stdout and "kinds: talking-head" in out.stdout
    assert (tmp_path / "models" / "lips" / "musetalkV15" / "unet.pth").is_file()
    from daemon.registry import discover_models

    found = discover_models(tmp_path / "models")
    assert found["lips"].backend == "musetalk" and found["lips"].kinds == ["talking-head"]
