"""text/image/video-to-video through a real daemon on tiny random-weight diffusers models.

The models are built by scripts/tiny_models.py (save_pretrained of each family's real
classes, an offline tokenizer) and loaded back by the workers through from_pretrained.
Random weights make noise, so the checks are on the plumbing: frames, size, fps, seeds,
which worker loaded what and how often, cancel, out-of-memory and the errors users meet.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tests.support import REPO, Daemon, drop_folder, drop_json, status, wait_all_final, wait_for, wait_status

sys.path.insert(0, str(REPO / "scripts"))
from tiny_models import FAMILIES  # noqa: E402

STEPS = 2


def size_params(family: str, **extra) -> dict:
    t = FAMILIES[family]["test_size"]
    return {"width": t["width"], "height": t["height"], "num_frames": t["num_frames"],
            "num_inference_steps": STEPS, **extra}


def api(d: Daemon, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(d.api + "/api/v1" + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def workers(d: Daemon) -> list[dict]:
    return api(d, "GET", "/queue")[1]["devices"]


def ffprobe_video(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=width,height,r_frame_rate,nb_read_frames,codec_name,pix_fmt", "-of", "json", str(path)],
        capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["streams"][0]


def decoded_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def photo_bytes(size=(80, 60)) -> bytes:
    """A drawn picture (gradient sky, sun, ground) as PNG."""
    from io import BytesIO

    from PIL import ImageDraw

    w, h = size
    sky = np.linspace([40, 90, 200], [200, 220, 255], h // 2).astype(np.uint8)
    image = Image.new("RGB", size, (60, 140, 60))
    image.paste(Image.fromarray(np.repeat(sky[:, None, :], w, axis=1)), (0, 0))
    ImageDraw.Draw(image).ellipse((w * 0.6, h * 0.1, w * 0.8, h * 0.35), fill=(255, 210, 40))
    buf = BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def clip_bytes(tmp_path: Path, frames: int = 12) -> bytes:
    path = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=8",
                    "-frames:v", str(frames), "-pix_fmt", "yuv420p", str(path)], check=True)
    return path.read_bytes()


@pytest.fixture(scope="module")
def gen(tiny_models, tmp_path_factory):
    """A daemon with two CPU workers serving the tiny models, plus broken registry entries."""
    base = tmp_path_factory.mktemp("gen")
    corrupt = base / "corrupt-model"
    shutil.copytree(tiny_models / "wan-t2v", corrupt)
    (corrupt / "model_index.json").write_text('{"_class_name": "WanPipeline", ')
    models = {
        "oom": {"path": str(tiny_models / "wan-t2v"), "kinds": ["text-to-video"],
                "pipeline": "vidspool_testkinds.oom:OutOfMemoryWanPipeline"},
        "missing": {"path": str(base / "not-here"), "kinds": ["text-to-video"]},
        "corrupt": {"path": str(corrupt), "kinds": ["text-to-video"]},
        "small": {"path": str(tiny_models / "wan-t2v"), "kinds": ["text-to-video"], "max_frame_pixels": 4000},
        # narrated-video's generated backgrounds take the size and steps from here.
        "scenes": {"path": str(tiny_models / "wan-t2v"), "kinds": ["text-to-video"],
                   "defaults": {"width": 32, "height": 32, "num_frames": 5, "num_inference_steps": 2}},
        # The names examples/ use (`make tiny-models` builds them into models/).
        **{f"tiny-{f}": {"path": str(tiny_models / f)} for f in FAMILIES},
    }
    d = Daemon(base / "spool", workers=["cpu", "cpu"], VIDSPOOL_REGISTRY__DIR=str(tiny_models),
               VIDSPOOL_MODELS=json.dumps(models)).start()
    yield d
    d.stop()


def run_jobs(d: Daemon, jobs: dict[str, tuple[dict, dict]], timeout: float = 240) -> dict[str, dict]:
    for name, (job, files) in jobs.items():
        if files:
            drop_folder(d.root / "inbox", name, job, files)
        else:
            drop_json(d.root / "inbox", name, job)
    return wait_all_final(d.root, list(jobs), timeout=timeout, daemon=d)


# -- every kind of every family ----------------------------------------------------------


def test_each_kind_and_family_end_to_end(gen, tmp_path):
    photo, clip = photo_bytes(), clip_bytes(tmp_path)
    jobs = {
        "t2v-wan": ({"kind": "text-to-video", "model": "wan-t2v", "params": size_params("wan-t2v", prompt="a fox in snow", fps=16)}, {}),
        "t2v-ltx": ({"kind": "text-to-video", "model": "ltx", "params": size_params("ltx", prompt="a fox in snow", fps=24)}, {}),
        "i2v-wan": ({"kind": "image-to-video", "model": "wan-i2v", "inputs": {"image": "face.png"},
                     "params": size_params("wan-i2v", fps=16)}, {"face.png": photo}),  # no prompt
        "i2v-ltx": ({"kind": "image-to-video", "model": "ltx", "inputs": {"image": "face.png"},
                     "params": size_params("ltx", prompt="she smiles", fps=24)}, {"face.png": photo}),
        "i2v-svd": ({"kind": "image-to-video", "model": "svd", "inputs": {"image": "face.png"},
                     "params": size_params("svd", fps=7)}, {"face.png": photo}),
        "v2v-wan": ({"kind": "video-to-video", "model": "wan-t2v", "inputs": {"video": "clip.mp4"},
                     "params": {"prompt": "as a watercolour", "strength": 0.7, "num_frames": 9, "width": 32,
                                "height": 32, "num_inference_steps": 3, "fps": 8}}, {"clip.mp4": clip}),
    }
    docs = run_jobs(gen, jobs)
    for name, (job, _) in jobs.items():
        doc = docs[name]
        assert doc["state"] == "completed", (name, doc["error"], gen.log())
        p = job["params"]
        out = gen.root / "outbox" / name
        info = ffprobe_video(out / "video.mp4")
        assert (info["width"], info["height"]) == (p["width"], p["height"]), (name, info)
        assert int(info["nb_read_frames"]) == p["num_frames"], (name, info)
        assert info["r_frame_rate"] == f"{p['fps']}/1", (name, info)
        assert info["codec_name"] == "h264" and info["pix_fmt"] == "yuv420p"
        raw = (out / "video.mp4").read_bytes()
        assert raw.index(b"moov") < raw.index(b"mdat"), "faststart: the index comes first"
        names = [f["name"] for f in doc["result"]["files"]]
        assert names == ["video.mp4", "thumb.jpg", "preview.gif"]
        with Image.open(out / "preview.gif") as gif:
            assert gif.format == "GIF" and gif.n_frames >= 2 and max(gif.size) <= 256
        assert Image.open(out / "thumb.jpg").size == (p["width"], p["height"])
        video = doc["result"]["video"]
        assert (video["width"], video["height"], video["frames"], video["fps"]) == (p["width"], p["height"], p["num_frames"], p["fps"])
        assert doc["result"]["model"]["name"] == job["model"]
        assert isinstance(doc["result"]["seed"], int)
        frames = decoded_frames(out / "video.mp4")
        assert frames.std() > 1, f"{name}: frames are flat"
    assert docs["v2v-wan"]["result"]["model"]["pipeline"] == "WanVideoToVideoPipeline"
    assert docs["i2v-ltx"]["result"]["model"]["pipeline"] == "LTXImageToVideoPipeline"
    assert docs["i2v-svd"]["result"]["model"]["pipeline"] == "StableVideoDiffusionPipeline"


def test_narrated_video_generates_one_clip_per_scene(gen):
    """background 'generate': a text-to-video clip per sentence from the registry, played
    behind the speech; refused before any speech when the model is absent or too big."""
    text = "A red fox runs through the snow. The sea is calm at night."
    small = {"width": 64, "height": 48, "fps": 12, "captions": "none"}
    done = run_jobs(gen, {
        "gen-scenes": ({"kind": "narrated-video", "model": "scenes", "params": {
            "text": text, "background": "generate", "background_prompt": "watercolor", "seed": 7, **small}}, {}),
        "gen-none": ({"kind": "narrated-video", "params": {"text": text, "background": "generate", **small}}, {}),
        "gen-missing": ({"kind": "narrated-video", "model": "missing", "params": {
            "text": text, "background": "generate", **small}}, {}),
        "gen-too-big": ({"kind": "narrated-video", "model": "small", "params": {
            "text": text, "background": "generate", **small}}, {}),
    })
    st = done["gen-scenes"]
    assert st["state"] == "completed", st.get("error")
    scenes = st["result"]["scenes"]
    assert [s["background"] for s in scenes] == ["generated", "generated"]
    assert st["result"]["model"]["name"] == "scenes" and st["result"]["model"]["seed"] == 7
    video = gen.root / "outbox" / "gen-scenes" / "video.mp4"
    pixels = decoded_frames(video).astype(np.int16)
    assert pixels.shape[1:3] == (48, 64)
    # Random weights give noise, not the flat colour card: the frames vary within a frame.
    assert pixels[len(pixels) // 2].std() > 5
    assert abs(len(pixels) / 12 - st["result"]["video"]["duration"]) < 0.2
    for name, code, words in (("gen-none", "model_not_found", "text-to-video model"),
                              ("gen-missing", "model_not_found", "not-here"),
                              ("gen-too-big", "invalid_job", "max_frame_pixels")):
        error = done[name]["error"]
        assert done[name]["state"] == "failed" and error["code"] == code and words in error["message"], (name, error)
        assert done[name]["stage"] == "speech" and done[name]["progress"] < 5, done[name]  # before any speech


def test_examples_run_on_the_tiny_models(gen):
    examples = REPO / "examples"
    inbox = gen.root / "inbox"
    shutil.copy(examples / "tiny-text-to-video.json", inbox / ".tiny-text-to-video.json.part")
    (inbox / ".tiny-text-to-video.json.part").rename(inbox / "tiny-text-to-video.json")
    for name in ("tiny-image-to-video", "tiny-video-to-video"):
        shutil.copytree(examples / name, inbox / f".{name}.part")
        (inbox / f".{name}.part").rename(inbox / name)
    names = ["tiny-text-to-video", "tiny-image-to-video", "tiny-video-to-video"]
    docs = wait_all_final(gen.root, names, timeout=240, daemon=gen)
    for name in names:
        assert docs[name]["state"] == "completed", (name, docs[name]["error"])
        assert "noise" in docs[name]["labels"]["note"]
        job = json.loads((examples / (f"{name}.json" if name == "tiny-text-to-video" else f"{name}/job.json")).read_text())
        video = docs[name]["result"]["video"]
        assert (video["width"], video["height"]) == (job["params"]["width"], job["params"]["height"])


def test_same_seed_same_frames_other_seed_other_frames(gen):
    def job(seed):
        return {"kind": "text-to-video", "model": "wan-t2v", "params": size_params("wan-t2v", prompt="waves", seed=seed)}

    docs = run_jobs(gen, {"seed-a": (job(7), {}), "seed-b": (job(7), {}), "seed-c": (job(8), {})})
    assert all(d["state"] == "completed" for d in docs.values()), docs
    a, b, c = (decoded_frames(gen.root / "outbox" / n / "video.mp4") for n in ("seed-a", "seed-b", "seed-c"))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and np.abs(a.astype(int) - c.astype(int)).mean() > 1
    assert docs["seed-a"]["result"]["seed"] == 7


# -- progress, cancel, out of memory ---------------------------------------------------------


def test_progress_per_step_and_cancel_within_a_step(gen):
    drop_json(gen.root / "inbox", "long", {"kind": "text-to-video", "model": "wan-t2v",
                                           "params": size_params("wan-t2v", prompt="slow", num_inference_steps=1000)})
    seen = []

    def denoising_under_way():
        doc = status(gen.root, "long")
        if doc and doc.get("stage") == "denoising" and (doc.get("step") or 0) >= 3:
            seen.append(doc)
            return True
        return False

    wait_for(denoising_under_way, timeout=120, what="denoising step 3")
    doc = seen[-1]
    assert doc["total_steps"] == 1000 and doc["eta_seconds"] > 0 and doc["message"] == f"step {doc['step']}/1000"
    assert 10 <= doc["progress"] < 85
    pids = {w["device"]: w["pid"] for w in workers(gen)}
    asked = time.monotonic()
    assert api(gen, "DELETE", "/jobs/long")[0] == 202
    end = wait_status(gen.root, "long", timeout=30, daemon=gen)
    took = time.monotonic() - asked
    assert end["state"] == "canceled" and end["error"]["code"] == "canceled"
    assert took < 3, f"cancel took {took:.2f}s (a tiny step is ~0.05 s)"
    # The worker stayed up, and serves the next job.
    after = run_jobs(gen, {"after-cancel": ({"kind": "text-to-video", "model": "wan-t2v",
                                             "params": size_params("wan-t2v", prompt="next")}, {})})
    assert after["after-cancel"]["state"] == "completed"
    assert {w["device"]: w["pid"] for w in workers(gen)} == pids


def test_out_of_memory_fails_the_job_and_the_worker_goes_on(gen):
    pids = {w["device"]: w["pid"] for w in workers(gen)}
    docs = run_jobs(gen, {"oom": ({"kind": "text-to-video", "model": "oom", "params": size_params("wan-t2v", prompt="big")}, {})})
    err = docs["oom"]["error"]
    assert docs["oom"]["state"] == "failed" and err["code"] == "gpu_out_of_memory", err
    assert "out of GPU memory" in err["message"] and "offload" in err["message"] and err["retryable"] is True
    device = docs["oom"]["device"]
    # The next job of that model goes to the worker holding it, the one that hit the error:
    # one step, and the simulated allocation fails only at the second.
    after = run_jobs(gen, {"after-oom": ({"kind": "text-to-video", "model": "oom",
                                          "params": size_params("wan-t2v", prompt="small", num_inference_steps=1)}, {})})
    after = after["after-oom"]
    assert after["state"] == "completed" and after["device"] == device, after
    assert after["result"]["model"]["loaded"] is False, after["result"]["model"]  # the model it kept, warm
    assert {w["device"]: w["pid"] for w in workers(gen)} == pids, "a worker restarted"


# -- errors users meet ---------------------------------------------------------------------


def test_errors_name_the_problem(gen, tmp_path):
    loads_before = sum(w["model_loads"] for w in workers(gen))
    t2v = size_params("wan-t2v", prompt="x")
    jobs = {
        "e-missing": ({"kind": "text-to-video", "model": "missing", "params": t2v}, {}),
        "e-corrupt": ({"kind": "text-to-video", "model": "corrupt", "params": t2v}, {}),
        "e-notimage": ({"kind": "image-to-video", "model": "wan-i2v", "inputs": {"image": "face.png"},
                        "params": size_params("wan-i2v")}, {"face.png": b"this is not a picture at all"}),
        "e-notvideo": ({"kind": "video-to-video", "model": "wan-t2v", "inputs": {"video": "clip.mp4"},
                        "params": {"prompt": "x"}}, {"clip.mp4": b"\x00\x01 not a video" * 50}),
        "e-unknown": ({"kind": "text-to-video", "model": "no-such-model", "params": t2v}, {}),
        "e-nomodel": ({"kind": "text-to-video", "params": t2v}, {}),
        "e-frames": ({"kind": "text-to-video", "model": "wan-t2v", "params": {**t2v, "num_frames": 6}}, {}),
        "e-size": ({"kind": "text-to-video", "model": "ltx", "params": {**size_params("ltx", prompt="x"), "width": 48}}, {}),
        "e-prompt": ({"kind": "image-to-video", "model": "svd", "inputs": {"image": "face.png"},
                      "params": size_params("svd", prompt="svd takes none")}, {"face.png": photo_bytes()}),
        "e-kind": ({"kind": "image-to-video", "model": "wan-t2v", "inputs": {"image": "face.png"}}, {"face.png": photo_bytes()}),
        "e-limit-known": ({"kind": "text-to-video", "model": "small", "params": t2v}, {}),
        "e-limit-defaults": ({"kind": "text-to-video", "model": "small", "params": {"prompt": "model-size video"}}, {}),
    }
    docs = run_jobs(gen, jobs)
    expect = {
        # The folder by its own name: a status shows no host path (daemon/view/hostpaths.py).
        "e-missing": ("model_not_found", ["not-here does not exist", "[models.missing] path"]),
        "e-corrupt": ("model_load_failed", ["model_index.json", "corrupt"]),
        "e-notimage": ("unsupported_input", ["face.png", "not a readable image"]),
        "e-notvideo": ("unsupported_input", ["clip.mp4", "not a readable video"]),
        "e-unknown": ("model_not_found", ["no-such-model", "wan-t2v"]),
        "e-nomodel": ("model_not_found", ["needs a model", "[kinds.text-to-video] model", "wan-t2v"]),
        "e-frames": ("invalid_job", ["params.num_frames", "4k+1", "nearest: 5 or 9"]),
        "e-size": ("invalid_job", ["params.width", "multiple of 32"]),
        "e-prompt": ("invalid_job", ["params.prompt", "StableVideoDiffusionPipeline"]),
        "e-kind": ("invalid_job", ["serves", "not image-to-video"]),
        "e-limit-known": ("invalid_job", ["[models.small] max_frame_pixels"]),
        "e-limit-defaults": ("invalid_job", ["over the limit of 4000"]),
    }
    for name, (code, words) in expect.items():
        err = docs[name]["error"]
        assert docs[name]["state"] == "failed" and err["code"] == code, (name, err)
        for word in words:
            assert word in err["message"], (name, word, err["message"])
        assert (gen.root / "outbox" / name / "input").is_dir(), "the user's files are kept"
    # None of them got as far as loading weights, and the daemon still serves.
    assert sum(w["model_loads"] for w in workers(gen)) == loads_before
    ok = run_jobs(gen, {"after-errors": ({"kind": "text-to-video", "model": "wan-t2v", "params": t2v}, {})})
    assert ok["after-errors"]["state"] == "completed"


# -- residency and placement -------------------------------------------------------------------


def test_warm_model_loads_once_and_jobs_go_to_the_worker_holding_their_model(tiny_models, tmp_path):
    d = Daemon(tmp_path / "spool", workers=["cpu", "cpu"], VIDSPOOL_REGISTRY__DIR=str(tiny_models)).start()
    try:
        # Load one model per worker through the API: each goes to the worker with room.
        assert api(d, "POST", "/models/wan-t2v/load")[0] == 202
        wait_for(lambda: any("wan-t2v" in w["models"] for w in workers(d)), timeout=120, what="wan-t2v loaded")
        assert api(d, "POST", "/models/ltx/load")[0] == 202
        wait_for(lambda: any("ltx" in w["models"] for w in workers(d)), timeout=120, what="ltx loaded")
        holder = {m: w["device"] for w in workers(d) for m in w["models"]}
        assert holder["wan-t2v"] != holder["ltx"], workers(d)
        models = {m["name"]: m for m in api(d, "GET", "/models")[1]["models"]}
        assert models["wan-t2v"]["loaded_on"] == [holder["wan-t2v"]] and models["svd"]["available"]

        for round_ in range(2):  # both idle: each job goes where its model is, in either order
            first, second = ("ltx", "wan-t2v") if round_ == 0 else ("wan-t2v", "ltx")
            docs = run_jobs(d, {f"{m}-{round_}": ({"kind": "text-to-video", "model": m,
                                                   "params": size_params(m, prompt="warm")}, {}) for m in (first, second)})
            for m in (first, second):
                doc = docs[f"{m}-{round_}"]
                assert doc["state"] == "completed" and doc["device"] == holder[m], (m, doc["device"], holder)
                assert doc["result"]["model"]["loaded"] is False and doc["result"]["model"]["load_seconds"] == 0
        assert [w["model_loads"] for w in workers(d)] == [1, 1], "no model was loaded twice"

        # Unload frees the worker; the next job for it loads again (counted).
        assert api(d, "POST", "/models/ltx/unload")[0] == 202
        wait_for(lambda: all("ltx" not in w["models"] for w in workers(d)), what="ltx unloaded")
        assert api(d, "POST", "/models/nope/load")[0] == 404
    finally:
        d.stop()


def test_memory_budget_keeps_the_most_recently_used_models(tiny_models, tmp_path):
    # A budget below one tiny model: each new model unloads the previous one.
    d = Daemon(tmp_path / "spool", workers=["cpu"], VIDSPOOL_REGISTRY__DIR=str(tiny_models),
               VIDSPOOL_WORKERS__MODEL_MEMORY_GB="0.00001").start()
    try:
        for i, m in enumerate(["wan-t2v", "ltx", "wan-t2v"]):
            doc = run_jobs(d, {f"lru-{i}": ({"kind": "text-to-video", "model": m, "params": size_params(m, prompt="x")}, {})})[f"lru-{i}"]
            assert doc["state"] == "completed" and doc["result"]["model"]["loaded"] is True
            (w,) = workers(d)
            assert w["models"] == [m] and w["model_loads"] == i + 1
            assert w["memory"]["used"] > 0 and w["memory"]["total"] > w["memory"]["used"]
    finally:
        d.stop()


# -- the command line -----------------------------------------------------------------------------


def test_models_cli_list_and_import(tiny_models, tmp_path):
    env_dir = tmp_path / "registry"
    env = {"VIDSPOOL_REGISTRY__DIR": str(env_dir), "VIDSPOOL_API__PORT": "1", "HF_HUB_OFFLINE": "1",
           "VIDSPOOL_MODELS": json.dumps({"gone": {"path": str(tmp_path / "gone"), "kinds": ["text-to-video"]},
                                          "plain-svd": {"path": str(tiny_models / "svd")}}),  # no kinds given
           "PATH": "/usr/bin:/bin"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "daemon", "models", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)

    out = cli("import", str(tiny_models / "ltx"), "--name", "my-ltx")
    assert out.returncode == 0, out.stderr
    assert "image-to-video, text-to-video" in out.stdout and (env_dir / "my-ltx" / "model_index.json").is_file()
    assert cli("import", str(tiny_models / "ltx"), "--name", "my-ltx").returncode == 2  # exists already
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    out = cli("import", str(bad))
    assert out.returncode == 2 and "no model_index.json" in out.stderr
    out = cli("list")
    assert out.returncode == 1, out.stdout  # "gone" is missing
    assert "my-ltx" in out.stdout and "gone" in out.stdout and "MISSING" in out.stdout and "does not exist" in out.stdout
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if not line.startswith(" ")}
    # What each model runs: as configured, else what its folder's pipeline does (never "any").
    assert " kinds=text-to-video " in lines["gone"], lines
    assert " kinds=image-to-video,text-to-video " in lines["my-ltx"], lines
    assert " kinds=image-to-video " in lines["plain-svd"], lines
